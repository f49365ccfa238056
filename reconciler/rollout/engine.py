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

import dataclasses
import math
from collections.abc import Iterable, Mapping
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
    OperatorAction,
    Persist,
    Push,
    Reply,
    StartTimer,
    StatsReceived,
    TimerFired,
)
from reconciler.rollout.stages import is_last, stage_members
from reconciler.rollout.state import (
    Ending,
    Paused,
    PendingFinish,
    RolloutSpec,
    RolloutState,
    StageResult,
)
from reconciler.rollout.status import RolloutStatus
from reconciler.rollout.values import (
    FinalStatus,
    Phase,
    RolloutOutcome,
    Signal,
    StageOutcome,
    StageVerdict,
)

_ACTIVE = (Phase.PUSHING, Phase.BAKING, Phase.PAUSED)
# The phases each operator action is accepted in.
_ALLOWED: dict[OperatorAction, tuple[Phase, ...]] = {
    OperatorAction.PROMOTE: _ACTIVE, OperatorAction.PROMOTE_FULL: _ACTIVE,
    OperatorAction.ABORT: _ACTIVE, OperatorAction.PAUSE: (Phase.PUSHING, Phase.BAKING),
    OperatorAction.RESUME: (Phase.PAUSED,),
}


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
        self._live: tuple[tuple[int, int, Phase], StageVerdict] | None = None

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
            eng._finish(RolloutOutcome.PROMOTED, FinalStatus.DEPLOYED, "no proxy is affected")
        else:
            eng._begin_stage(0, now)
        return eng, eng._flush()

    @classmethod
    def restore(cls, data: Mapping[str, Any], now: float) -> tuple[RolloutEngine, list[Command]]:
        """Resume from a persisted state. A stage that was pushing or baking is repeated from
        its push (its evidence is gone); a rollback is re-sent; a pause stays paused."""
        eng = cls(RolloutState.from_json(data))
        st = eng.state
        if st.phase is Phase.DONE:
            return eng, []
        repeated = st.phase in (Phase.PUSHING, Phase.BAKING)
        eng._audit("rollout.restored", {"phase": st.phase.value, "stage": st.stage + 1,
                                        "repeated": repeated})
        if st.phase is Phase.ROLLING_BACK:
            eng._send_rollback(now)
        elif repeated:
            st.acked.clear()
            eng._begin_stage(st.stage, now, repeat=True)
        elif st.phase is Phase.PAUSED and st.on_new:
            # A restart hands every proxy the deployed config: the paused stage's canaries
            # get the new one again (their ACKs are asked again; `resume` waits for them
            # before it bakes), so the pause holds what the operator paused.
            st.acked.clear()
            members = sorted(st.on_new)
            eng._out.append(Push({p: eng._new(p) for p in members},
                                 tuple(p for p in members if p not in st.disconnected), "stage"))
        eng._dirty = True
        return eng, eng._flush()

    def to_json(self) -> dict[str, Any]:
        """The stored form of the state (what `Persist` carries and `restore` takes)."""
        return self.state.to_json()

    to_dict = to_json  # the name the canary shell calls

    def role_of(self, proxy_id: str) -> str | None:
        """"canary" (on the new config, ACKed), "baseline" (affected, still on the old one),
        or None (not part of this rollout's evidence)."""
        return self._role(proxy_id)

    @property
    def phase(self) -> Phase:
        return self.state.phase

    # -- events ----------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        if self.state.phase is Phase.DONE:
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
        if st.phase is Phase.ROLLING_BACK:
            if ev.proxy_id in st.rollback_pending and ev.version == t.old_version:
                st.rollback_pending.discard(ev.proxy_id)  # persisted with the next change
                if not st.rollback_pending:
                    self._finish_pending("every proxy is back on its previous config")
            return
        if ev.proxy_id not in st.on_new or ev.version != t.new_version:
            return
        st.acked.add(ev.proxy_id)  # persisted with the next change (see the module doc)
        if st.phase is Phase.PUSHING and not self._waiting():
            self._start_bake(ev.now)

    def _on_nack(self, ev: Nacked) -> None:
        st, t = self.state, self.state.spec.target(ev.proxy_id)
        if t is None:
            return
        if st.phase is Phase.ROLLING_BACK:
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
        self._fail(self._signal(Signal.NACK, f"{ev.proxy_id} refused the new config (NACK): "
                                f"{ev.error[:300]}", proxy=ev.proxy_id), ev.now)

    def _on_disconnect(self, ev: Disconnected) -> None:
        st, p = self.state, ev.proxy_id
        if st.spec.target(p) is None or p in st.disconnected:
            return
        st.disconnected.add(p)
        self._dirty = True
        if st.phase is Phase.ROLLING_BACK:
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
            self._fail(self._signal(Signal.DISCONNECT, f"canary {p} disconnected while running "
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
        elif st.phase is Phase.PUSHING and not self._waiting():
            self._start_bake(ev.now)

    def _on_stats(self, ev: StatsReceived) -> None:
        st = self.state
        if st.phase is not Phase.BAKING or st.bake_started is None:
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
            if verdict.outcome is Outcome.FAILED:
                self._fail(dataclasses.replace(verdict, interim=True), ev.now)

    def _on_timer(self, ev: TimerFired) -> None:
        st = self.state
        kind = next((k for k, tok in st.timers.items() if tok == ev.token), None)
        if kind is None:
            return  # a timer we no longer wait for
        del st.timers[kind]
        self._dirty = True
        if kind == "ack" and st.phase is Phase.PUSHING:
            late = sorted(self._waiting())
            self._fail(self._signal(Signal.ACK_TIMEOUT, f"{len(late)} canaries did not ACK within "
                                    f"{st.spec.ack_timeout:g}s ({', '.join(late[:5])})",
                                    proxies=late), ev.now)
        elif kind == "bake" and st.phase is Phase.BAKING:
            self._judge_final(ev.now)
        elif kind == "rollback" and st.phase is Phase.ROLLING_BACK:
            left = sorted(st.rollback_pending)
            st.rollback_pending.clear()
            self._finish_pending(f"rollback sent; {len(left)} proxies did not confirm within "
                                 f"{st.spec.rollback_timeout:g}s ({', '.join(left[:5])})")

    def _on_operator(self, ev: Operator) -> None:
        st, a = self.state, ev.action
        if not isinstance(a, OperatorAction):
            self._reply(a, False, f"unknown action {a!r}")
            return
        if st.phase not in _ALLOWED[a]:
            self._reply(a, False, f"cannot {a} while {st.phase.replace('_', ' ')}")
            return
        self._audit("rollout.operator", {"action": a.value, "stage": st.stage + 1,
                                         "phase": st.phase.value, "reason": ev.reason},
                    actor=ev.actor)
        self._reply(a, True, f"{a} accepted at stage {st.stage + 1}")
        last = len(st.spec.settings.stages) - 1
        if a is OperatorAction.ABORT:
            why = f"aborted by {ev.actor}" + (f": {ev.reason}" if ev.reason else "")
            self._rollback(RolloutOutcome.ABORTED, FinalStatus.REJECTED, why, ev.now)
        elif a is OperatorAction.PAUSE:
            st.paused = Paused(st.phase, f"paused by {ev.actor}")
            st.phase = Phase.PAUSED
            st.timers.clear()
            self._dirty = True
        elif a is OperatorAction.RESUME:
            st.paused = None
            if self._waiting():
                st.phase = Phase.PUSHING
                self._timer("ack", st.spec.ack_timeout)
            else:
                self._start_bake(ev.now)
            self._dirty = True
        elif a is OperatorAction.PROMOTE_FULL or st.stage >= last:
            st.paused = None
            st.finish_after_ack = True
            self._dirty = True
            if st.stage >= last and not self._waiting():
                self._finish(RolloutOutcome.PROMOTED, FinalStatus.DEPLOYED,
                             f"promoted by {ev.actor}")
            else:
                self._begin_stage(last, ev.now)
        else:
            st.paused = None
            st.history.append(StageResult(st.stage + 1, StageOutcome.PROMOTED,
                                          f"promoted by {ev.actor}"))
            self._begin_stage(self._next_stage(st.stage + 1), ev.now)

    def _on_new_commit(self, ev: NewCommit) -> None:
        st = self.state
        st.next_revision = ev.revision
        self._dirty = True
        if st.phase is Phase.ROLLING_BACK or st.spec.settings.on_new_commit == "finish-then-next":
            self._audit("rollout.next_queued", {"next": ev.revision, "phase": st.phase.value})
            return
        self._rollback(RolloutOutcome.SUPERSEDED, FinalStatus.SUPERSEDED,
                       f"superseded by {ev.revision} (onNewCommit: restart)", ev.now)

    # -- steps -----------------------------------------------------------------------------

    def _begin_stage(self, index: int, now: float, *, repeat: bool = False) -> None:
        st, spec = self.state, self.state.spec
        stages = spec.settings.stages
        members = stage_members(spec.revision, spec.targets, stages, index, st.excluded)
        fresh = [p for p in members if p not in st.on_new]
        st.on_new.update(members)
        st.stage, st.phase = index, Phase.PUSHING
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
            self._finish(RolloutOutcome.PROMOTED, FinalStatus.DEPLOYED,
                         "promoted by an operator (promote --full)")
            return
        bake = st.spec.settings.stages[st.stage].bake
        st.phase, st.bake_started, st.bake_ends = Phase.BAKING, now, now + bake
        self._reset_evidence()
        self._dirty = True
        self._audit("rollout.stage_acked", {"stage": st.stage + 1,
                                            "canaries": sorted(self._canaries()),
                                            "bakeSeconds": bake})
        self._timer("bake", bake)

    def _judge_final(self, now: float) -> None:
        st = self.state
        verdict = self._stage_verdict()
        outcome = verdict.outcome
        st.last_verdict = verdict
        if outcome is Outcome.SUCCESSFUL:
            self._audit_decision(verdict, "promote")
            self._advance(verdict, now)
        elif outcome is Outcome.FAILED:
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
                st.phase = Phase.PAUSED
                st.paused = Paused(Phase.BAKING, f"{outcome}: {verdict.reason}")
                st.timers.clear()
        self._dirty = True

    def _advance(self, verdict: StageVerdict, now: float) -> None:
        st = self.state
        st.history.append(StageResult(st.stage + 1, StageOutcome(verdict.outcome.value),
                                      verdict.reason))
        if is_last(st.spec.settings.stages, st.stage):
            self._finish(RolloutOutcome.PROMOTED, FinalStatus.DEPLOYED, "every stage passed")
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

    def _fail(self, verdict: StageVerdict, now: float) -> None:
        st = self.state
        st.last_verdict = verdict
        st.history.append(StageResult(st.stage + 1, StageOutcome.FAILED, verdict.reason))
        if st.spec.settings.on_failure == "pause":
            self._audit_decision(verdict, "pause for an operator (onFailure: pause)")
            st.paused = Paused(st.phase, f"Failed: {verdict.reason}")
            st.phase = Phase.PAUSED
            st.timers.clear()
            self._dirty = True
            return
        self._audit_decision(verdict, "roll back")
        self._rollback(RolloutOutcome.ROLLED_BACK, FinalStatus.REJECTED, verdict.reason, now)

    def _rollback(self, outcome: RolloutOutcome, status: FinalStatus, reason: str,
                  now: float) -> None:
        st = self.state
        st.pending_finish = PendingFinish(outcome, status, reason)
        st.phase = Phase.ROLLING_BACK
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
                                         "reason": "" if st.pending_finish is None
                                         else st.pending_finish.reason})
        self._out.append(Push(assign, tuple(sorted(st.rollback_pending)), "rollback"))
        if st.rollback_pending:
            self._timer("rollback", st.spec.rollback_timeout)
        else:
            self._finish_pending("nothing to wait for")

    def _finish_pending(self, note: str) -> None:
        pf = self.state.pending_finish or PendingFinish(RolloutOutcome.ROLLED_BACK,
                                                        FinalStatus.REJECTED, "")
        self._finish(pf.outcome, pf.status, pf.reason, note)

    def _finish(self, outcome: RolloutOutcome, status: FinalStatus, reason: str,
                note: str = "") -> None:
        st = self.state
        st.phase = Phase.DONE
        st.timers.clear()
        st.outcome = Ending(outcome, status, reason)
        self._dirty = True
        self._audit("rollout.finished", {**st.outcome.to_json(), "note": note,
                                         "stage": st.stage + 1,
                                         "history": [h.to_json() for h in st.history],
                                         "next": st.next_revision})
        self._out.append(Finished(outcome, status, reason, st.next_revision))

    # -- judging ---------------------------------------------------------------------------

    def _stage_verdict(self, interim_divisor: float | None = None) -> StageVerdict:
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
        return StageVerdict(outcome, "; ".join(reasons), st.stage + 1, tuple(sorted(canaries)),
                            tuple(sorted(baseline)), services)

    def _signal(self, signal: Signal, reason: str, *, proxy: str | None = None,
                proxies: list[str] | None = None) -> StageVerdict:
        """A failure from the fleet (not from stats), with the stage's numbers so far."""
        so_far = self._stage_verdict() if self.state.phase is Phase.BAKING else None
        return StageVerdict(Outcome.FAILED, reason, self.state.stage + 1,
                            tuple(sorted(self._canaries())), tuple(self._baseline_ids()),
                            so_far.services if so_far else {}, signal, proxy,
                            None if proxies is None else tuple(proxies))

    def _sum(self, ids: Iterable[str]) -> Sample:
        out = Sample()
        for p in ids:
            s = self._evidence.get(p)
            if s is not None:
                out = out + s
        return out

    def _audit_decision(self, verdict: StageVerdict, decision: str) -> None:
        self._audit("rollout.judged", {**verdict.to_json(), "decision": decision,
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
            out.append(Persist(self.state.to_json()))
        self._out, self._dirty = [], False
        return out

    # -- read side -------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        """What `meshcd rollout status/watch` shows (the API's JSON form of `status_view`)."""
        return self.status_view(now).to_json()

    def status_view(self, now: float) -> RolloutStatus:
        """Where the rollout is, and the live numbers while a stage bakes."""
        st = self.state
        live = None
        if st.phase is Phase.BAKING:
            key = (int(now), st.stage, st.phase)
            if self._live is None or self._live[0] != key:
                self._live = (key, self._stage_verdict())
            live = self._live[1]
        return RolloutStatus(
            now=now, revision=st.spec.revision, previous=st.spec.previous, phase=st.phase,
            stage=st.stage + 1, stages=tuple(s.label() for s in st.spec.settings.stages),
            canaries=tuple(sorted(self._canaries())), baseline=tuple(self._baseline_ids()),
            waiting_for_ack=tuple(sorted(self._waiting())),
            bake_elapsed=None if st.bake_started is None else max(0.0, now - st.bake_started),
            bake_ends=st.bake_ends, extensions=st.extensions, paused=st.paused, live=live,
            last_verdict=st.last_verdict, history=tuple(st.history), next=st.next_revision,
            outcome=st.outcome,
        )
