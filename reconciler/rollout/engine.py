"""The rollout state machine: one revision replacing the previous one on the affected
proxies, stage by stage. Sans-I/O: `handle(event)` returns the commands the shell runs.

    pushing(k) --all canaries ACKed--> baking(k) --bake timer--> judged
        judged Successful --> pushing(k+1) | done(promoted) after the last stage
        judged Failed / NACK / ACK timeout / canary died on the new config --> rolling_back
        judged Inconclusive or Error --> per onInconclusive: pass | extend (bounded) | paused
    paused --resume--> bake again / --promote--> next stage / --abort--> rolling_back
    rolling_back --every proxy ACKed its old version (or timeout)--> done(rolled_back ...)

After every event that changed the state the last command is `Persist(state)`, except for an
ACK that only adds to the ACKed (or rolled-back) set: with 10,000 proxies a stage is 10,000
ACKs, and storing ~1 MB of state per ACK would take minutes. Such ACKs go out with the next
Persist; a restart before it re-sends the stage's push, and a proxy already on that version
ACKs again at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from reconciler.analysis.judge import Outcome, Verdict, judge, worst
from reconciler.analysis.sample import BadWindow, Sample
from reconciler.rollout.messages import (
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
    StartTimer,
    StatsReceived,
    TimerFired,
)
from reconciler.rollout.stages import is_last, stage_members
from reconciler.rollout.state import RolloutSpec, RolloutState

_ACTIVE = ("pushing", "baking", "paused")


class RolloutEngine:
    def __init__(self, state: RolloutState) -> None:
        self.state = state
        # Evidence of the current bake (not persisted): samples and seconds seen, by proxy.
        self._evidence: dict[str, Sample] = {}
        self._seen: dict[str, set[int]] = {}
        self._last_look = -1
        self._out: list[Command] = []
        self._dirty = False
        # The live verdict `status` shows, per (second, stage, phase): every poll of every
        # viewer would judge again, which costs milliseconds per thousand proxies.
        self._live: tuple[tuple[int, int, str], dict[str, Any]] | None = None

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def start(cls, spec: RolloutSpec, now: float) -> tuple[RolloutEngine, list[Command]]:
        state = RolloutState(spec, disconnected={t.proxy_id for t in spec.targets
                                                 if not t.connected})
        eng = cls(state)
        s = spec.settings
        eng._audit("rollout.started", {
            "revision": spec.revision, "previous": spec.previous,
            "proxies": len(spec.targets), "services": sorted({t.service for t in spec.targets}),
            "stages": [x.label() for x in s.stages], "policies": list(s.policies),
            "onFailure": s.on_failure, "onInconclusive": s.on_inconclusive,
            "onNewCommit": s.on_new_commit,
        })
        if not spec.targets:
            eng._finish("promoted", "deployed", "no proxy is affected")
        else:
            eng._begin_stage(0, now)
        return eng, eng._flush()

    @classmethod
    def restore(cls, data: Mapping[str, Any], now: float) -> tuple[RolloutEngine, list[Command]]:
        """Resume from a persisted state. A stage that was pushing or baking is repeated from
        its push (its evidence is gone); a rollback is re-sent; a pause stays paused."""
        eng = cls(RolloutState.from_dict(data))
        st = eng.state
        if st.phase == "done":
            return eng, []
        eng._audit("rollout.restored", {"phase": st.phase, "stage": st.stage + 1,
                                        "repeated": st.phase in ("pushing", "baking")})
        if st.phase == "rolling_back":
            eng._send_rollback(now)
        elif st.phase in ("pushing", "baking"):
            st.acked.clear()
            eng._begin_stage(st.stage, now, repeat=True)
        elif st.phase == "paused" and st.on_new:
            # A restart hands every proxy the deployed config: the paused stage's canaries
            # get the new one again (their ACKs are asked again; `resume` waits for them
            # before it bakes), so the pause holds what the operator paused.
            st.acked.clear()
            members = sorted(st.on_new)
            eng._out.append(Push({p: eng._new(p) for p in members},
                                 tuple(p for p in members if p not in st.disconnected), "stage"))
        eng._dirty = True
        return eng, eng._flush()

    def to_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    def role_of(self, proxy_id: str) -> str | None:
        """"canary" (on the new config, ACKed), "baseline" (affected, still on the old one),
        or None (not part of this rollout's evidence)."""
        return self._role(proxy_id)

    @property
    def phase(self) -> str:
        return self.state.phase

    # -- events ----------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        if self.state.phase == "done":
            if isinstance(event, Operator):
                self._reply(event.action, False, "the rollout is over")
            return self._flush()
        match event:
            case Acked():
                self._on_ack(event)
            case Nacked():
                self._on_nack(event)
            case Disconnected():
                self._on_disconnect(event)
            case StatsReceived():
                self._on_stats(event)
            case TimerFired():
                self._on_timer(event)
            case Operator():
                self._on_operator(event)
            case NewCommit():
                self._on_new_commit(event)
        return self._flush()

    def _on_ack(self, ev: Acked) -> None:
        st, t = self.state, self.state.spec.target(ev.proxy_id)
        if t is None:
            return
        if st.phase == "rolling_back":
            if ev.proxy_id in st.rollback_pending and ev.version == t.old_version:
                st.rollback_pending.discard(ev.proxy_id)  # persisted with the next change
                if not st.rollback_pending:
                    self._finish_pending("every proxy is back on its previous config")
            return
        if ev.proxy_id not in st.on_new or ev.version != t.new_version:
            return
        st.acked.add(ev.proxy_id)  # persisted with the next change (see the module doc)
        if st.phase == "pushing" and not self._waiting():
            self._start_bake(ev.now)

    def _on_nack(self, ev: Nacked) -> None:
        st, t = self.state, self.state.spec.target(ev.proxy_id)
        if t is None:
            return
        if st.phase == "rolling_back":
            # Only a NACK of the old config refuses the rollback: a late NACK of the new one
            # (from the stage's push) says nothing about the rollback.
            if ev.proxy_id in st.rollback_pending and ev.version == t.old_version:
                st.rollback_pending.discard(ev.proxy_id)
                self._dirty = True
                self._audit("rollout.rollback_refused", {"proxy": ev.proxy_id,
                                                         "error": ev.error[:500]})
                if not st.rollback_pending:
                    self._finish_pending("rollback sent; some proxies refused their old config")
            return
        if ev.proxy_id not in st.on_new or ev.version != t.new_version:
            return
        self._fail(self._signal("nack", f"{ev.proxy_id} refused the new config (NACK): "
                                f"{ev.error[:300]}", proxy=ev.proxy_id), ev.now)

    def _on_disconnect(self, ev: Disconnected) -> None:
        st, p = self.state, ev.proxy_id
        if st.spec.target(p) is None or p in st.disconnected:
            return
        st.disconnected.add(p)
        self._dirty = True
        if st.phase == "rolling_back":
            if p in st.rollback_pending:
                st.rollback_pending.discard(p)
                if not st.rollback_pending:
                    self._finish_pending("rollback sent; some proxies disconnected")
            return
        if p not in st.on_new:
            return  # a baseline proxy: it just stops contributing
        if p in st.acked:
            # It ran the new config and went away: we cannot tell a crash the config caused
            # from one it did not, and rolling back is the safe side.
            self._fail(self._signal("disconnect", f"canary {p} disconnected while running "
                                    "the new config", proxy=p), ev.now)
            return
        # Never ran the new config: drop it from the rollout (its desired goes back to the old
        # config, so it does not get an unjudged config when it reconnects).
        t = st.spec.target(p)
        assert t is not None
        st.on_new.discard(p)
        st.excluded.add(p)
        self._out.append(Push({p: t.old_version}, (), "drop"))
        self._audit("rollout.canary_dropped", {"stage": st.stage + 1, "proxy": p,
                                               "reason": "disconnected before it ACKed"})
        if not is_last(st.spec.settings.stages, st.stage) and not self._canaries():
            self._begin_stage(st.stage, ev.now, repeat=True)  # choose again without it
        elif st.phase == "pushing" and not self._waiting():
            self._start_bake(ev.now)

    def _on_stats(self, ev: StatsReceived) -> None:
        st = self.state
        if st.phase != "baking" or st.bake_started is None:
            return
        role = self._role(ev.proxy_id)
        if role is None:
            return
        try:
            second = int(ev.window["second"])
            sample = Sample.from_window(ev.window)
        except (KeyError, TypeError, ValueError, BadWindow):
            return  # a malformed window is no evidence
        if second < math.ceil(st.bake_started):
            return  # from before the canaries ran the new config
        seen = self._seen.setdefault(ev.proxy_id, set())
        if second in seen:
            return
        seen.add(second)
        prev = self._evidence.get(ev.proxy_id)
        self._evidence[ev.proxy_id] = sample if prev is None else prev + sample
        divisor = st.spec.interim_alpha_divisor
        if divisor > 0 and second > self._last_look:
            self._last_look = second
            verdict = self._stage_verdict(interim_divisor=divisor)
            if verdict["outcome"] == str(Outcome.FAILED):
                verdict["interim"] = True
                self._fail(verdict, ev.now)

    def _on_timer(self, ev: TimerFired) -> None:
        st = self.state
        kind = next((k for k, tok in st.timers.items() if tok == ev.token), None)
        if kind is None:
            return  # a timer we no longer wait for
        del st.timers[kind]
        self._dirty = True
        if kind == "ack" and st.phase == "pushing":
            late = sorted(self._waiting())
            self._fail(self._signal("ack_timeout", f"{len(late)} canaries did not ACK within "
                                    f"{st.spec.ack_timeout:g}s ({', '.join(late[:5])})",
                                    proxies=late), ev.now)
        elif kind == "bake" and st.phase == "baking":
            self._judge_final(ev.now)
        elif kind == "rollback" and st.phase == "rolling_back":
            left = sorted(st.rollback_pending)
            st.rollback_pending.clear()
            self._finish_pending(f"rollback sent; {len(left)} proxies did not confirm within "
                                 f"{st.spec.rollback_timeout:g}s ({', '.join(left[:5])})")

    def _on_operator(self, ev: Operator) -> None:
        st, a = self.state, ev.action
        active = st.phase in _ACTIVE
        if a not in ("promote", "promote-full", "pause", "resume", "abort"):
            self._reply(a, False, f"unknown action {a!r}")
            return
        ok = {"promote": active, "promote-full": active, "abort": active,
              "pause": st.phase in ("pushing", "baking"), "resume": st.phase == "paused"}[a]
        if not ok:
            self._reply(a, False, f"cannot {a} while {st.phase.replace('_', ' ')}")
            return
        self._audit("rollout.operator", {"action": a, "stage": st.stage + 1, "phase": st.phase,
                                         "reason": ev.reason}, actor=ev.actor)
        self._reply(a, True, f"{a} accepted at stage {st.stage + 1}")
        last = len(st.spec.settings.stages) - 1
        if a == "abort":
            why = f"aborted by {ev.actor}" + (f": {ev.reason}" if ev.reason else "")
            self._rollback("aborted", "rejected", why, ev.now)
        elif a == "pause":
            st.paused = {"from": st.phase, "reason": f"paused by {ev.actor}"}
            st.phase = "paused"
            st.timers.clear()
            self._dirty = True
        elif a == "resume":
            st.paused = None
            if self._waiting():
                st.phase = "pushing"
                self._timer("ack", st.spec.ack_timeout)
            else:
                self._start_bake(ev.now)
            self._dirty = True
        elif a == "promote-full" or st.stage >= last:
            st.paused = None
            st.finish_after_ack = True
            self._dirty = True
            if st.stage >= last and not self._waiting():
                self._finish("promoted", "deployed", f"promoted by {ev.actor}")
            else:
                self._begin_stage(last, ev.now)
        else:
            st.paused = None
            st.history.append({"stage": st.stage + 1, "outcome": "Promoted",
                               "reason": f"promoted by {ev.actor}"})
            self._begin_stage(self._next_stage(st.stage + 1), ev.now)

    def _on_new_commit(self, ev: NewCommit) -> None:
        st = self.state
        st.next_revision = ev.revision
        self._dirty = True
        if st.phase == "rolling_back" or st.spec.settings.on_new_commit == "finish-then-next":
            self._audit("rollout.next_queued", {"next": ev.revision, "phase": st.phase})
            return
        self._rollback("superseded", "superseded",
                       f"superseded by {ev.revision} (onNewCommit: restart)", ev.now)

    # -- steps -----------------------------------------------------------------------------

    def _begin_stage(self, index: int, now: float, *, repeat: bool = False) -> None:
        st, spec = self.state, self.state.spec
        stages = spec.settings.stages
        members = stage_members(spec.revision, spec.targets, stages, index, st.excluded)
        fresh = [p for p in members if p not in st.on_new]
        st.on_new.update(members)
        st.stage, st.phase = index, "pushing"
        st.bake_started = st.bake_ends = None
        st.extensions = 0
        st.paused = None
        st.timers.clear()
        self._reset_evidence()
        self._dirty = True
        to_push = sorted(st.on_new) if repeat else fresh
        assign = {p: self._new(p) for p in to_push}
        waiting = sorted(self._waiting())
        self._audit("rollout.stage_started", {
            "stage": index + 1, "of": len(stages), "spec": stages[index].label(),
            "canaries": sorted(st.on_new), "new": fresh, "baseline": self._baseline_ids(),
            "repeated": repeat,
        })
        self._out.append(Push(assign, tuple(waiting), "stage"))
        if waiting:
            self._timer("ack", spec.ack_timeout)
        else:
            self._start_bake(now)

    def _start_bake(self, now: float) -> None:
        st = self.state
        if st.finish_after_ack:
            self._finish("promoted", "deployed", "promoted by an operator (promote --full)")
            return
        bake = st.spec.settings.stages[st.stage].bake
        st.phase, st.bake_started, st.bake_ends = "baking", now, now + bake
        self._reset_evidence()
        self._dirty = True
        self._audit("rollout.stage_acked", {"stage": st.stage + 1,
                                            "canaries": sorted(self._canaries()),
                                            "bakeSeconds": bake})
        self._timer("bake", bake)

    def _judge_final(self, now: float) -> None:
        st = self.state
        verdict = self._stage_verdict()
        outcome = verdict["outcome"]
        st.last_verdict = verdict
        if outcome == str(Outcome.SUCCESSFUL):
            self._audit_decision(verdict, "promote")
            self._advance(verdict, now)
        elif outcome == str(Outcome.FAILED):
            self._fail(verdict, now)
        else:
            policy = st.spec.settings.on_inconclusive
            if policy == "pass":
                self._audit_decision(verdict, "pass (onInconclusive: pass)")
                self._advance(verdict, now)
            elif policy == "extend" and st.extensions < st.spec.max_extensions:
                st.extensions += 1
                bake = st.spec.settings.stages[st.stage].bake
                st.bake_ends = now + bake
                self._audit_decision(verdict, f"extend the bake ({st.extensions} of "
                                              f"{st.spec.max_extensions})")
                self._timer("bake", bake)
            else:
                why = ("onInconclusive: pause" if policy != "extend"
                       else f"still {outcome} after {st.extensions} extensions")
                self._audit_decision(verdict, f"pause for an operator ({why})")
                st.phase = "paused"
                st.paused = {"from": "baking", "reason": f"{outcome}: {verdict['reason']}"}
                st.timers.clear()
        self._dirty = True

    def _advance(self, verdict: Mapping[str, Any], now: float) -> None:
        st = self.state
        st.history.append({"stage": st.stage + 1, "outcome": verdict["outcome"],
                           "reason": verdict["reason"]})
        if is_last(st.spec.settings.stages, st.stage):
            self._finish("promoted", "deployed", "every stage passed")
            return
        self._begin_stage(self._next_stage(st.stage + 1), now)

    def _next_stage(self, index: int) -> int:
        """`index`, or the first later stage that adds a proxy: a stage whose canaries are
        the ones already on the new config (10% of few proxies) would only bake them again."""
        st, spec = self.state, self.state.spec
        stages = spec.settings.stages
        while not is_last(stages, index):
            members = stage_members(spec.revision, spec.targets, stages, index, st.excluded)
            if not set(members) <= st.on_new:
                break
            self._audit("rollout.stage_skipped", {"stage": index + 1,
                                                  "reason": "no proxy to add"})
            index += 1
        return index

    def _fail(self, verdict: dict[str, Any], now: float) -> None:
        st = self.state
        st.last_verdict = verdict
        st.history.append({"stage": st.stage + 1, "outcome": "Failed",
                           "reason": verdict["reason"]})
        if st.spec.settings.on_failure == "pause":
            self._audit_decision(verdict, "pause for an operator (onFailure: pause)")
            st.paused = {"from": st.phase, "reason": f"Failed: {verdict['reason']}"}
            st.phase = "paused"
            st.timers.clear()
            self._dirty = True
            return
        self._audit_decision(verdict, "roll back")
        self._rollback("rolled_back", "rejected", verdict["reason"], now)

    def _rollback(self, outcome: str, status: str, reason: str, now: float) -> None:
        st = self.state
        st.pending_finish = {"outcome": outcome, "status": status, "reason": reason}
        st.phase = "rolling_back"
        st.paused = None
        st.timers.clear()
        st.rollback_pending = {p for p in st.on_new if p not in st.disconnected
                               and self._old(p) is not None}
        self._dirty = True
        self._send_rollback(now)

    def _send_rollback(self, now: float) -> None:
        st = self.state
        assign = {p: self._old(p) for p in sorted(st.on_new)}
        self._audit("rollout.rollback", {"stage": st.stage + 1, "proxies": sorted(assign),
                                         "reason": (st.pending_finish or {}).get("reason", "")})
        self._out.append(Push(assign, tuple(sorted(st.rollback_pending)), "rollback"))
        if st.rollback_pending:
            self._timer("rollback", st.spec.rollback_timeout)
        else:
            self._finish_pending("nothing to wait for")

    def _finish_pending(self, note: str) -> None:
        pf = self.state.pending_finish or {"outcome": "rolled_back", "status": "rejected",
                                           "reason": ""}
        self._finish(pf["outcome"], pf["status"], pf["reason"], note)

    def _finish(self, outcome: str, status: str, reason: str, note: str = "") -> None:
        st = self.state
        st.phase = "done"
        st.timers.clear()
        st.outcome = {"outcome": outcome, "revisionStatus": status, "reason": reason}
        self._dirty = True
        self._audit("rollout.finished", {"outcome": outcome, "revisionStatus": status,
                                         "reason": reason, "note": note,
                                         "stage": st.stage + 1, "history": st.history,
                                         "next": st.next_revision})
        self._out.append(Finished(outcome, status, reason, st.next_revision))

    # -- judging ---------------------------------------------------------------------------

    def _stage_verdict(self, interim_divisor: float | None = None) -> dict[str, Any]:
        """Judge every service that has canaries; the stage's outcome is the worst."""
        st, spec = self.state, self.state.spec
        canaries = self._canaries()
        baseline = set(self._baseline_ids())
        services: dict[str, Verdict] = {}
        for svc in sorted({t.service for t in spec.targets if t.proxy_id in canaries}):
            ids = [t.proxy_id for t in spec.targets if t.service == svc]
            c = self._sum(p for p in ids if p in canaries)
            b = self._sum(p for p in ids if p in baseline) if any(
                p in baseline for p in ids) else None
            analysis = spec.settings.analysis_for(svc)
            # 1 - confidence bounds the chance of rolling back a healthy change over the
            # whole rollout: it is split over the stages (and further for early looks).
            alpha = (1.0 - analysis.confidence) / len(spec.settings.stages)
            if interim_divisor:
                if c.total < analysis.min_requests:
                    continue  # early looks at a handful of requests fail healthy changes
                alpha /= interim_divisor
            parts = [self._evidence[p] for p in ids if p in baseline and p in self._evidence]
            services[svc] = judge(c, b, analysis, alpha=alpha, baseline_parts=parts)
        outcome = worst([v.outcome for v in services.values()]) if services else Outcome.ERROR
        reasons = [f"{svc}: {v.reason}" for svc, v in services.items()
                   if v.outcome == outcome] or ["no canary to judge"]
        return {"outcome": str(outcome), "reason": "; ".join(reasons),
                "stage": st.stage + 1, "canaries": sorted(canaries),
                "baseline": sorted(baseline),
                "services": {svc: v.to_dict() for svc, v in services.items()}}

    def _signal(self, signal: str, reason: str, **extra: Any) -> dict[str, Any]:
        """A failure from the fleet (not from stats), with the stage's numbers so far."""
        so_far = self._stage_verdict() if self.state.phase == "baking" else None
        return {"outcome": str(Outcome.FAILED), "reason": reason, "signal": signal, **extra,
                "stage": self.state.stage + 1, "canaries": sorted(self._canaries()),
                "baseline": self._baseline_ids(),
                "services": so_far["services"] if so_far else {}}

    def _sum(self, ids: Any) -> Sample:
        out = Sample()
        for p in ids:
            s = self._evidence.get(p)
            if s is not None:
                out = out + s
        return out

    def _audit_decision(self, verdict: Mapping[str, Any], decision: str) -> None:
        self._audit("rollout.judged", {**verdict, "decision": decision,
                                       "extensions": self.state.extensions})

    # -- helpers ---------------------------------------------------------------------------

    def _new(self, p: str) -> str:
        t = self.state.spec.target(p)
        assert t is not None
        return t.new_version

    def _old(self, p: str) -> str | None:
        t = self.state.spec.target(p)
        assert t is not None
        return t.old_version

    def _canaries(self) -> set[str]:
        """Proxies on the new config that ACKed it and are still connected."""
        st = self.state
        return {p for p in st.on_new if p in st.acked and p not in st.disconnected}

    def _waiting(self) -> set[str]:
        st = self.state
        return {p for p in st.on_new if p not in st.acked and p not in st.disconnected}

    def _baseline_ids(self) -> list[str]:
        st = self.state
        return sorted(t.proxy_id for t in st.spec.targets
                      if t.proxy_id not in st.on_new and t.proxy_id not in st.disconnected)

    def _role(self, p: str) -> str | None:
        st = self.state
        if st.spec.target(p) is None or p in st.disconnected:
            return None
        if p in st.on_new:
            return "canary" if p in st.acked else None
        return "baseline"

    def _reset_evidence(self) -> None:
        self._evidence.clear()
        self._seen.clear()
        self._last_look = -1
        self._live = None

    def _timer(self, kind: str, seconds: float) -> None:
        st = self.state
        st.seq += 1
        token = f"{kind}:{st.seq}"
        st.timers[kind] = token
        self._dirty = True
        self._out.append(StartTimer(token, seconds))

    def _audit(self, kind: str, data: Mapping[str, Any], actor: str | None = None) -> None:
        st = self.state
        self._out.append(Audit(actor or st.spec.actor, kind, st.spec.revision, dict(data)))

    def _reply(self, action: str, accepted: bool, message: str) -> None:
        self._out.append(Reply(action, accepted, message))

    def _flush(self) -> list[Command]:
        out = self._out
        if self._dirty:
            out.append(Persist(self.state.to_dict()))
        self._out, self._dirty = [], False
        return out

    # -- read side -------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        """What `meshcd rollout status/watch` shows: where it is, and the live numbers."""
        st = self.state
        stages = st.spec.settings.stages
        live = None
        if st.phase == "baking":
            key = (int(now), st.stage, st.phase)
            if self._live is None or self._live[0] != key:
                self._live = (key, self._stage_verdict())
            live = self._live[1]
        return {
            "now": now, "revision": st.spec.revision, "previous": st.spec.previous,
            "phase": st.phase,
            "stage": st.stage + 1, "stages": [s.label() for s in stages],
            "canaries": sorted(self._canaries()), "baseline": self._baseline_ids(),
            "waitingForAck": sorted(self._waiting()),
            "bakeElapsed": None if st.bake_started is None else max(0.0, now - st.bake_started),
            "bakeEnds": st.bake_ends, "extensions": st.extensions, "paused": st.paused,
            "live": live, "lastVerdict": st.last_verdict, "history": st.history,
            "next": st.next_revision, "outcome": st.outcome,
        }
