"""A small playbook helper: drive a RolloutEngine with a script of events and read its
commands back as short lines, so a test reads like the story it checks.

    pb = Playbook.fast()
    pb.start()                      -> ["push stage w3", "timer ack"]
    pb.ack("w3")                    -> ["timer bake 3"]
    pb.traffic(3, canary=HEALTHY)   -> []   (one window per proxy per second)
    pb.fire("bake")                 -> ["judged Successful: promote", "push stage ..."]

Audit records other than decisions, and Persist, are left out of the lines (they are in
`pb.commands`, `pb.audits` and `pb.persisted` for the tests that look at them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.analysis.sample import LATENCY_BUCKETS
from reconciler.language.model import Analysis
from reconciler.rollout import (
    FAST_STAGES,
    Acked,
    Audit,
    Command,
    Disconnected,
    Event,
    Finished,
    Nacked,
    NewCommit,
    Operator,
    Persist,
    Push,
    Reply,
    RolloutEngine,
    RolloutSettings,
    RolloutSpec,
    StageSpec,
    StartTimer,
    StatsReceived,
    Target,
    TimerFired,
)

START = 1_000_000.0


@dataclass(frozen=True)
class Traffic:
    """Per proxy per second: requests, 5xx share, denied share, latency (seconds) of most
    requests and of the 1% tail."""

    rps: int = 100
    error_share: float = 0.0
    denied_share: float = 0.0
    latency: float = 0.008
    tail: float = 0.04
    extra_latency: float = 0.0


HEALTHY = Traffic()
ERRORS_5XX = Traffic(error_share=0.05)
DENYING = Traffic(denied_share=0.3)
SLOW = Traffic(extra_latency=0.3)


def window(second: int, t: Traffic) -> dict[str, Any]:
    n = t.rps
    e5 = round(n * t.error_share)
    den = round(n * t.denied_share)
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)

    def put(seconds: float, count: int) -> None:
        i = next((k for k, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
        buckets[i] += count

    slow = max(1, n // 100) if n else 0
    put(t.latency + t.extra_latency, n - slow)
    put(t.tail + t.extra_latency, slow)
    return {"second": second,
            "requests": {"2xx": n - e5 - den, "3xx": 0, "4xx": den, "5xx": e5},
            "connection_failures": 0, "denials": den, "latency_buckets": buckets,
            "latency_sum_seconds": n * (t.latency + t.extra_latency)}


def targets(services: Mapping[str, int], *, disconnected: tuple[str, ...] = ()) -> tuple[Target, ...]:
    """services: name -> number of proxies; proxy ids are <first letter><i>."""
    out = []
    for svc, n in services.items():
        for i in range(1, n + 1):
            pid = f"{svc[0]}{i}"
            out.append(Target(pid, f"{svc}.shop", f"new-{svc}", f"old-{svc}",
                              pid not in disconnected))
    return tuple(out)


class Playbook:
    def __init__(self, spec: RolloutSpec) -> None:
        self.spec = spec
        self.now = START
        self.engine: RolloutEngine | None = None
        self.commands: list[Command] = []
        self.persisted: dict[str, Any] | None = None
        self.second = int(START)

    @classmethod
    def fast(cls, services: Mapping[str, int] | None = None, *,
             stages: tuple[StageSpec, ...] = FAST_STAGES, **kw: Any) -> Playbook:
        analysis = kw.pop("analysis", Analysis())
        svc = {"web": 4, "api": 2} if services is None else services
        settings_kw = {k: kw.pop(k) for k in ("on_failure", "on_new_commit", "on_inconclusive")
                       if k in kw}
        settings = RolloutSettings(stages, {f"{s}.shop": analysis for s in svc}, **settings_kw)
        ts = targets(svc, disconnected=kw.pop("disconnected", ()))
        return cls(RolloutSpec("rev-2", "rev-1", ts, settings, **kw))

    # -- driving ---------------------------------------------------------------------------

    def _take(self, cmds: list[Command]) -> list[str]:
        self.commands.extend(cmds)
        for c in cmds:
            if isinstance(c, Persist):
                # The persisted form must be JSON: round-trip it as the store would.
                self.persisted = json.loads(json.dumps(c.state))
        return lines(cmds)

    def start(self) -> list[str]:
        self.engine, cmds = RolloutEngine.start(self.spec, self.now)
        return self._take(cmds)

    def send(self, event: Event) -> list[str]:
        assert self.engine is not None
        return self._take(self.engine.handle(event))

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def new(self, p: str) -> str:
        t = self.spec.target(p)
        assert t is not None
        return t.new_version

    def old(self, p: str) -> str | None:
        t = self.spec.target(p)
        assert t is not None
        return t.old_version

    def ack(self, *proxies: str) -> list[str]:
        out: list[str] = []
        for p in proxies:
            out += self.send(Acked(p, self.new(p), self.now))
        return out

    def ack_old(self, *proxies: str) -> list[str]:
        out: list[str] = []
        for p in proxies:
            out += self.send(Acked(p, self.old(p) or "", self.now))
        return out

    def ack_pushed(self) -> list[str]:
        """ACK whatever the last stage push waits for."""
        push = self.last_push()
        out: list[str] = []
        for p in push.wait_for:
            out += self.send(Acked(p, push.assign.get(p) or self.new(p), self.now))
        return out

    def nack(self, p: str, error: str = "bad config") -> list[str]:
        return self.send(Nacked(p, self.new(p), error, self.now))

    def disconnect(self, p: str) -> list[str]:
        return self.send(Disconnected(p, self.now))

    def op(self, action: str, actor: str = "user:alice", reason: str = "") -> list[str]:
        return self.send(Operator(action, actor, self.now, reason))

    def commit(self, revision: str) -> list[str]:
        return self.send(NewCommit(revision, self.now))

    def fire(self, kind: str) -> list[str]:
        """Let time pass to the timer of `kind` the engine waits for, and fire it."""
        assert self.engine is not None
        token = self.engine.state.timers.get(kind)
        assert token is not None, f"no {kind} timer pending ({self.engine.state.timers})"
        timer = next(c for c in reversed(self.commands)
                     if isinstance(c, StartTimer) and c.token == token)
        self.advance(timer.seconds)
        return self.send(TimerFired(token, self.now))

    def traffic(self, seconds: int, canary: Traffic = HEALTHY, baseline: Traffic = HEALTHY,
                **per_proxy: Traffic) -> list[str]:
        """`seconds` whole seconds of windows from every connected target: canaries (on the
        new config) get `canary`, the others `baseline`, unless named in `per_proxy`."""
        assert self.engine is not None
        out: list[str] = []
        start = int(self.now) + 1
        for s in range(start, start + seconds):
            self.now = float(s + 1)  # the window for second s is complete at s+1
            st = self.engine.state
            for t in self.spec.targets:
                if t.proxy_id in st.disconnected:
                    continue
                prof = per_proxy.get(t.proxy_id) or (
                    canary if t.proxy_id in st.on_new and t.proxy_id in st.acked else baseline)
                out += self.send(StatsReceived(t.proxy_id, window(s, prof), self.now))
                if st.phase != "baking":
                    return out
        return out

    def restart(self) -> list[str]:
        """A controller restart: rebuild the engine from the last persisted state."""
        assert self.persisted is not None
        self.engine, cmds = RolloutEngine.restore(self.persisted, self.now)
        return self._take(cmds)

    # -- reading ---------------------------------------------------------------------------

    def last_push(self) -> Push:
        return next(c for c in reversed(self.commands) if isinstance(c, Push))

    def pushes(self) -> list[Push]:
        return [c for c in self.commands if isinstance(c, Push)]

    def audits(self, kind: str | None = None) -> list[Audit]:
        return [c for c in self.commands if isinstance(c, Audit) and (kind is None or c.kind == kind)]

    def finished(self) -> Finished | None:
        return next((c for c in self.commands if isinstance(c, Finished)), None)

    @property
    def phase(self) -> str:
        assert self.engine is not None
        return self.engine.state.phase

    @property
    def stage(self) -> int:
        assert self.engine is not None
        return self.engine.state.stage + 1

    def with_spec(self, **changes: Any) -> Playbook:
        return Playbook(replace(self.spec, **changes))


def lines(cmds: list[Command]) -> list[str]:
    out: list[str] = []
    for c in cmds:
        match c:
            case Push():
                body = " ".join(f"{p}={v}" for p, v in sorted(c.assign.items()))
                out.append(f"push {c.purpose} {body}".rstrip())
            case StartTimer():
                out.append(f"timer {c.token.split(':')[0]} {c.seconds:g}")
            case Audit() if c.kind == "rollout.judged":
                out.append(f"judged {c.data['outcome']}: {c.data['decision']}")
            case Audit() if c.kind == "rollout.operator":
                out.append(f"operator {c.data['action']} by {c.actor}")
            case Reply():
                out.append(f"reply {c.action} {'ok' if c.accepted else 'refused'}")
            case Finished():
                nxt = f" next={c.next_revision}" if c.next_revision else ""
                out.append(f"finished {c.outcome} ({c.revision_status}){nxt}")
            case _:
                pass
    return out
