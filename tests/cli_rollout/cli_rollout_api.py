"""The rollout part of the controller's JSON API (the canary wiring contract), served over
real HTTP on a 127.0.0.1 port, answering with what a real RolloutEngine says.

The engine is driven on a simulated clock by `RolloutDriver`: every `step()` is one second
(pushes are ACKed, every proxy sends one window built by the agent's own `StatsWindow`, due
timers fire), and the series comes from the real `SeriesRecorder`. With `advance_on_get` the
server steps the rollout once per `GET /api/rollout`, so `meshcd rollout watch` sees a whole
rollout in a fraction of a second, deterministically.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from proxy_runtime.stats_window import StatsWindow
from reconciler.rollout import (
    Acked,
    Command,
    Event,
    Finished,
    NewCommit,
    Operator,
    Push,
    Reply,
    RolloutEngine,
    RolloutSpec,
    StartTimer,
    StatsReceived,
    Target,
    TimerFired,
    settings_for,
)
from reconciler.rollout.series import SeriesRecorder

C1 = "1" * 40  # the deployed commit
C2 = "2" * 40  # the commit rolling out
SERVICES = {"cart.shop": 4, "web.shop": 2}
TOKENS = {"view-secret": ("vera", "viewer"), "op-secret": ("otto", "operator"),
          "admin-secret": ("admin", "admin")}


@dataclass(frozen=True)
class Traffic:
    """Per proxy per second: requests, the share answered 500, latency of each request."""

    rps: int = 100
    error_share: float = 0.0
    latency: float = 0.008


HEALTHY = Traffic()
FIVE_XX = Traffic(error_share=0.05)


def fleet(new: str, old: str) -> tuple[Target, ...]:
    return tuple(Target(f"{svc.split('.')[0]}-{i}", svc, f"{new[:6]}-{svc}", f"{old[:6]}-{svc}")
                 for svc, n in SERVICES.items() for i in range(1, n + 1))


class RolloutDriver:
    """A real RolloutEngine and the little shell around it: versions per proxy, ACKs, stats
    windows from the agent's StatsWindow, timers on the simulated clock, the series."""

    def __init__(self, revision_id: int, new: str, old: str, *, canary: Traffic = HEALTHY,
                 start: float | None = None) -> None:
        self.revision_id = revision_id
        self.commit = new
        self.now = float(int(start if start is not None else time.time()))
        self.started_at = self.now
        self.canary = canary
        self.targets = fleet(new, old)
        self.version = {t.proxy_id: t.old_version for t in self.targets}
        self.windows = {t.proxy_id: StatsWindow() for t in self.targets}
        self.series = SeriesRecorder()
        self.timers: dict[str, float] = {}
        self.acks: list[tuple[str, str | None]] = []
        self.finished: Finished | None = None
        self.replies: list[Reply] = []
        self.commands: list[Command] = []
        spec = RolloutSpec(new, old, self.targets,
                           settings_for(dict.fromkeys(SERVICES), preset="fast"),
                           actor="controller")
        self.engine, cmds = RolloutEngine.start(spec, self.now)
        self._run(cmds)

    def _run(self, cmds: list[Command]) -> None:
        self.commands.extend(cmds)
        for c in cmds:
            if isinstance(c, Push):
                for p, v in c.assign.items():
                    self.version[p] = v
                self.acks.extend((p, c.assign.get(p)) for p in c.wait_for)
            elif isinstance(c, StartTimer):
                self.timers[c.token] = self.now + c.seconds
            elif isinstance(c, Reply):
                self.replies.append(c)
            elif isinstance(c, Finished):
                self.finished = c

    def feed(self, event: Event) -> list[Command]:
        cmds = self.engine.handle(event)
        self._run(cmds)
        return cmds

    @property
    def done(self) -> bool:
        return self.engine.state.phase == "done"

    def step(self) -> None:
        """One second: ACK what was pushed, one window per proxy, fire due timers."""
        if self.done:
            return
        self.now += 1.0
        acks, self.acks = self.acks, []
        for p, v in acks:
            self.feed(Acked(p, v or "", self.now))
        second = int(self.now) - 1
        new_versions = {t.new_version for t in self.targets}
        for t in self.targets:
            traffic = self.canary if self.version[t.proxy_id] in new_versions else HEALTHY
            w = self.windows[t.proxy_id]
            at = second + 0.5
            for i in range(traffic.rps):
                status = 500 if i < round(traffic.rps * traffic.error_share) else 200
                w.record(at, status, traffic.latency)
            window = w.window(self.now, 1)[0]
            role = self.engine._role(t.proxy_id)
            if role is not None and self.engine.state.phase == "baking":
                self.series.add(t.proxy_id, role, window, started_at=self.started_at,
                                stage=self.engine.state.stage + 1)
            self.feed(StatsReceived(t.proxy_id, window, self.now))
        for token, due in sorted(self.timers.items(), key=lambda kv: kv[1]):
            if due <= self.now:
                del self.timers[token]
                self.feed(TimerFired(token, self.now))

    def run_until(self, pred: Callable[[RolloutDriver], bool], limit: int = 100) -> None:
        for _ in range(limit):
            if pred(self):
                return
            self.step()
        raise AssertionError(f"not reached in {limit} steps: {self.engine.state.phase}")

    def status(self) -> dict[str, Any]:
        """STATUS of the contract: the engine's status plus the API's fields."""
        return {**self.engine.status(self.now), "revisionId": self.revision_id,
                "commit": self.commit, "startedAt": self.started_at,
                "series": self.series.to_list()}


def summary(rev_id: int, commit: str, status: str, trigger: str = "webhook",
            outcome: str | None = None, rollback: dict[str, int] | None = None,
            message: str = "change") -> dict[str, Any]:
    return {"id": rev_id, "commit": commit, "branch": "main", "author": "Ana",
            "message": message, "trigger": trigger, "status": status,
            "detectedAt": "2026-11-25T20:00:00Z", "updatedAt": "2026-11-25T20:00:00Z",
            "reason": "", "outcome": outcome, "rollback": rollback}


@dataclass
class ApiState:
    """What the API serves; the test and the handler share it under `lock`."""

    revisions: dict[int, dict[str, Any]] = field(default_factory=dict)
    driver: RolloutDriver | None = None
    finals: dict[int, dict[str, Any]] = field(default_factory=dict)
    pin: dict[str, Any] | None = None
    advance_on_get: bool = False
    canary: Traffic = HEALTHY
    # GET /api/rollout number -> something to do before answering it
    on_get: dict[int, Callable[[ApiState], None]] = field(default_factory=dict)
    rollback_answer: tuple[int, dict[str, Any]] | None = None  # forced (status, body)
    queued: tuple[int, str, str, bool] | None = None  # rollback: (rev, new, old, fast)
    log: list[dict[str, Any]] = field(default_factory=list)
    rollout_gets: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    def start(self, rev_id: int, new: str, old: str, canary: Traffic | None = None) -> None:
        self.revisions[rev_id]["status"] = "deploying"
        self.driver = RolloutDriver(rev_id, new, old, canary=canary or self.canary)

    def settle(self) -> None:
        """Book a finished rollout (revision status, outcome, final status) and start a
        queued rollback, as the controller does."""
        d = self.driver
        if d is not None and d.finished is not None and d.revision_id not in self.finals:
            self.finals[d.revision_id] = d.status()
            rev = self.revisions[d.revision_id]
            rev["status"] = d.finished.revision_status
            rev["outcome"] = d.finished.outcome
            self.driver = None
            return  # a queued rollback starts at the next step, as the pipeline picks it up
        if self.driver is None and self.queued is not None:
            rev_id, new, old, fast = self.queued
            self.queued = None
            if fast:
                self.revisions[rev_id]["status"] = "deployed"
            else:
                self.start(rev_id, new, old, HEALTHY)

    def step(self) -> None:
        if self.driver is not None:
            self.driver.step()
        self.settle()


class _Handler(BaseHTTPRequestHandler):
    state: ApiState  # set on the subclass made per server

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if code == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(raw)

    def _principal(self, need: str) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        who = TOKENS.get(secret.strip()) if scheme.lower() == "bearer" else None
        if who is None:
            self._send(401, {"error": "a valid API token is required"})
            return None
        rank = ["viewer", "operator", "admin"]
        if rank.index(who[1]) < rank.index(need):
            self._send(403, {"error": f"this needs the {need} role"})
            return None
        return who

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def do_GET(self) -> None:
        s = self.state
        body = None
        with s.lock:
            s.log.append({"method": "GET", "path": self.path,
                          "authorization": self.headers.get("Authorization")})
        if self._principal("viewer") is None:
            return
        path = self.path.split("?", 1)[0]
        with s.lock:
            if path == "/api/rollout":
                s.rollout_gets += 1
                hook = s.on_get.get(s.rollout_gets)
                if hook is not None:
                    hook(s)
                if s.advance_on_get:
                    s.step()
                body = {"rollout": None if s.driver is None else s.driver.status(),
                        "pin": s.pin}
                return self._send(200, body)
            if path == "/api/revisions":
                revs = sorted(s.revisions.values(), key=lambda r: -r["id"])
                return self._send(200, {"revisions": revs, "next": None})
            m = re.fullmatch(r"/api/revisions/(\d+)(/rollout)?", path)
            if m:
                rev_id = int(m.group(1))
                if rev_id not in s.revisions:
                    return self._send(404, {"error": f"no revision {rev_id}"})
                if not m.group(2):
                    return self._send(200, s.revisions[rev_id])
                if rev_id in s.finals:
                    return self._send(200, s.finals[rev_id])
                if s.driver is not None and s.driver.revision_id == rev_id:
                    return self._send(200, s.driver.status())
                return self._send(404, {"error": f"revision {rev_id} had no rollout"})
        self._send(404, {"detail": "Not Found"})  # what FastAPI says for an unknown route

    def do_POST(self) -> None:
        s = self.state
        body = self._body()
        with s.lock:
            s.log.append({"method": "POST", "path": self.path, "body": body,
                          "authorization": self.headers.get("Authorization")})
        who = self._principal("operator")
        if who is None:
            return
        actor = f"token:{who[0]}#abcd1234"
        reason = (body or {}).get("reason", "")
        with s.lock:
            m = re.fullmatch(r"/api/rollout/(promote|promote-full|pause|resume|abort)", self.path)
            if m:
                action = m.group(1)
                d = s.driver
                if d is None:
                    if action == "resume" and s.pin is not None:
                        s.pin = None
                        return self._send(200, {"accepted": True, "actor": actor,
                                                "message": "unpinned: the newest held "
                                                           "revision is deployed"})
                    return self._send(409, {"error": "no rollout in progress"})
                d.feed(Operator(action, actor, d.now, reason))
                reply = d.replies[-1]
                s.settle()
                if not reply.accepted:
                    return self._send(409, {"error": reply.message})
                return self._send(200, {"accepted": True, "message": reply.message,
                                        "actor": actor})
            if self.path == "/api/rollback":
                if s.rollback_answer is not None:
                    return self._send(*s.rollback_answer)
                deployed = [r for r in s.revisions.values() if r["status"] == "deployed"]
                to = body.get("to")
                if to is not None and to not in s.revisions:
                    return self._send(404, {"error": f"no revision {to}"})
                target = s.revisions[to] if to is not None else (
                    max(deployed, key=lambda r: r["id"]) if deployed else None)
                if target is None:
                    return self._send(409, {"error": "nothing to roll back to"})
                new_id = max(s.revisions) + 1
                current = s.driver.commit if s.driver is not None else C2
                s.revisions[new_id] = summary(new_id, target["commit"], "planned", "rollback",
                                              rollback={"target": target["id"]},
                                              message=f"rollback to {target['id']}")
                if s.driver is not None and not s.driver.done:
                    s.driver.feed(Operator("abort", actor, s.driver.now,
                                           f"rollback: {reason}"))
                s.queued = (new_id, target["commit"], current, bool(body.get("fast")))
                s.pin = {"revision": target["id"], "commit": target["commit"], "actor": actor,
                         "at": "2026-11-25T20:01:00Z", "reason": reason}
                revert = "3" * 40 if body.get("revert") else None
                return self._send(202, {
                    "accepted": True, "revision": new_id, "commit": target["commit"],
                    "target": target["id"], "revertCommit": revert, "actor": actor,
                    "message": f"rolling back to revision {target['id']}"})
        self._send(404, {"detail": "Not Found"})


class ApiServer:
    """The API on 127.0.0.1:<free port>, in a thread, until `close()`."""

    def __init__(self, state: ApiState, port: int = 0) -> None:
        self.state = state
        self.closed = False
        handler = type("Handler", (_Handler,), {"state": state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.httpd.shutdown()
            self.httpd.server_close()


def new_commit(sha: str) -> Callable[[ApiState], None]:
    """An on_get hook: a newer valid commit arrives (onNewCommit: restart supersedes)."""

    def hook(s: ApiState) -> None:
        assert s.driver is not None
        s.driver.feed(NewCommit(sha, s.driver.now))

    return hook
