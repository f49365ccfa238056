"""A stateful property test of the revision queue and the rollout engine together
(tests/revisions/queue_world.py): new commits, answers of the shell's steps, ACKs, NACKs,
stats, disconnects, timers, operator actions, rollbacks, unpins and crashes (before any
command, and right after a persisted step) in any order.

Invariants, checked after every step: every proxy's desired version is one the audit records
as sent to it; a rejected commit is never deployed again; at most one rollout runs; a final
status (superseded, rejected, deployed, invalid, failed) never changes; each revision is
validated at most once per process; the queue's deployed revision is the stored one. At the
end: the audit chain verifies (reconciler.audit's own hashing) and, once everything is
answered, the queue is idle.

The normal run takes 10,000+ steps; MESHCD_QUEUE_SOAK=N multiplies the examples
(bench/queue_soak.py).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from queue_world import Crash, World

SOAK = int(os.environ.get("MESHCD_QUEUE_SOAK", "1"))
STEPS = 50
EXAMPLES = 400 * SOAK


class QueueAndEngine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = World()

    def _do(self, action: object) -> None:
        """Run one move and the pipeline's queued batches; a crash restarts the controller."""
        w = self.w
        try:
            action()  # type: ignore[operator]
            w.drain()
        except Crash:
            w.restart()
        w.tick()

    # -- the branch ---------------------------------------------------------------------------

    @rule(valid=st.booleans(), refused=st.booleans())
    def push_commit(self, valid: bool, refused: bool) -> None:
        self._do(lambda: self.w.new_commit(valid or refused, refused and valid))

    # -- the shell's steps --------------------------------------------------------------------

    @precondition(lambda self: bool(self.w.work))
    @rule(i=st.integers(0, 5))
    def answer_work(self, i: int) -> None:
        self._do(lambda: self.w.answer_work(i))

    @rule(rounds=st.integers(1, 30), crash_at=st.none() | st.integers(0, 12))
    def settle(self, rounds: int, crash_at: int | None) -> None:
        """Let things run for a while: the shell answers, every proxy ACKs, the timers the
        engine waits for fire; with `crash_at`, the controller dies before that store write
        (counted from here)."""
        w = self.w
        w.budget = crash_at
        for _ in range(rounds):
            if w.work:
                self._do(lambda: w.answer_work(0))
            elif w.answers:
                self._do(lambda: w.answer_push(0, True))
            elif w.timers:
                self._do(lambda: w.fire(-1))
            else:
                break
            if crash_at is not None and w.budget is None:
                return  # it crashed and restarted
        w.budget = None

    # -- the fleet ------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.w.answers))
    @rule(i=st.integers(0, 9), ack=st.sampled_from([True, True, True, False]))
    def answer_push(self, i: int, ack: bool) -> None:
        self._do(lambda: self.w.answer_push(i, ack))

    @precondition(lambda self: self.w.rollout is not None)
    @rule(bad=st.booleans())
    def stats(self, bad: bool) -> None:
        self._do(lambda: self.w.stats(0.3 if bad else 0.0))

    @precondition(lambda self: self.w.rollout is not None)
    @rule(i=st.integers(0, 4))
    def disconnect(self, i: int) -> None:
        self._do(lambda: self.w.disconnect(i))

    @precondition(lambda self: bool(self.w.disconnected))
    @rule()
    def reconnect(self) -> None:
        self._do(self.w.reconnect_all)

    @precondition(lambda self: bool(self.w.timers))
    @rule(i=st.integers(0, 3))
    def fire_timer(self, i: int) -> None:
        self._do(lambda: self.w.fire(i))

    # -- operators ------------------------------------------------------------------------------

    @precondition(lambda self: self.w.rollout is not None)
    @rule(action=st.sampled_from(["promote", "promote-full", "pause", "resume", "abort"]))
    def operator(self, action: str) -> None:
        self._do(lambda: self.w.operator(action))

    @precondition(lambda self: any(r.status.value == "deployed" for r in self.w.rows.values()))
    @rule(fast=st.booleans())
    def rollback(self, fast: bool) -> None:
        self._do(lambda: self.w.rollback(fast))

    @precondition(lambda self: self.w.queue.state.pin is not None)
    @rule()
    def unpin(self) -> None:
        self._do(self.w.unpin)

    # -- crashes --------------------------------------------------------------------------------

    @rule(after=st.none() | st.integers(0, 4),
          move=st.sampled_from(["commit", "work", "answer", "timer", "rollback"]))
    def crash(self, after: int | None, move: str) -> None:
        """SIGKILL: now (`after` None), or in the middle of the next move, before its store
        write number `after` (0: before the first; k: right after the k-th)."""
        w = self.w
        if after is None:
            w.restart()
            return
        w.budget = after
        if move == "commit":
            self._do(lambda: w.new_commit(True))
        elif move == "work" and w.work:
            self._do(lambda: w.answer_work(0))
        elif move == "answer" and w.answers:
            self._do(lambda: w.answer_push(0, True))
        elif move == "timer" and w.timers:
            self._do(lambda: w.fire(-1))  # the newest: the one the engine waits for
        elif move == "rollback":
            self._do(lambda: w.rollback(True))
        if w.budget is not None:  # the move ran whole: the crash comes right after it
            w.restart()

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def holds(self) -> None:
        self.w.check()

    def teardown(self) -> None:
        w = self.w
        w.verify_audit()
        # Everything answered (ACKs, timers, the shell's steps): the queue comes to rest.
        for _ in range(500):
            w.reconnect_all()
            if w.work:
                self._do(lambda: w.answer_work(0))
            elif w.answers:
                self._do(lambda: w.answer_push(0, True))
            elif w.timers:
                self._do(lambda: w.fire(0))
            elif w.rollout is not None and w.rollout.engine.phase == "paused":
                self._do(lambda: w.operator("resume"))
            else:
                break
            w.check()
        assert w.queue.idle and w.rollout is None and not w.work, (
            "the queue is stuck", w.queue.state, w.rollout)
        w.verify_audit()


QueueAndEngine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestQueueAndEngine = QueueAndEngine.TestCase
