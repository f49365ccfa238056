"""Random event sequences: the engine never crashes, every persisted state restores to
itself, a rollback covers every proxy that was given the new config, and a rollout finishes
at most once and pushes nothing after."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from rollout_playbook import ERRORS_5XX, HEALTHY, Playbook

from reconciler.rollout import Finished, Push, RolloutEngine
from reconciler.rollout.state import RolloutState

PROXIES = ["w1", "w2", "w3", "w4", "a1", "a2"]

step = st.one_of(
    st.tuples(st.just("ack"), st.sampled_from(PROXIES)),
    st.tuples(st.just("ack_old"), st.sampled_from(PROXIES)),
    st.tuples(st.just("nack"), st.sampled_from(PROXIES)),
    st.tuples(st.just("disconnect"), st.sampled_from(PROXIES)),
    st.tuples(st.just("traffic"), st.sampled_from(["healthy", "bad"])),
    st.tuples(st.just("fire"), st.sampled_from(["ack", "bake", "rollback"])),
    st.tuples(st.just("op"), st.sampled_from(["promote", "promote-full", "pause", "resume",
                                               "abort", "bogus"])),
    st.tuples(st.just("commit"), st.sampled_from(["rev-3", "rev-4"])),
    st.tuples(st.just("restart"), st.just("")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=40), st.sampled_from(["restart", "finish-then-next"]),
       st.sampled_from(["pause", "extend", "pass"]))
def test_random_events_keep_the_invariants(steps: list[tuple[str, str]], on_new_commit: str,
                                          on_inconclusive: str) -> None:
    pb = Playbook.fast(on_new_commit=on_new_commit, on_inconclusive=on_inconclusive)
    pb.start()
    for kind, arg in steps:
        assert pb.engine is not None
        if kind == "ack":
            pb.ack(arg)
        elif kind == "ack_old":
            pb.ack_old(arg)
        elif kind == "nack":
            pb.nack(arg)
        elif kind == "disconnect":
            pb.disconnect(arg)
        elif kind == "traffic":
            pb.traffic(1, canary=HEALTHY if arg == "healthy" else ERRORS_5XX)
        elif kind == "fire":
            if arg in pb.engine.state.timers:
                pb.fire(arg)
        elif kind == "op":
            pb.op(arg)
        elif kind == "commit":
            pb.commit(arg)
        elif kind == "restart" and pb.persisted is not None:
            pb.restart()
        state = pb.persisted
        assert state is not None
        assert RolloutState.from_json(state).to_json() == json.loads(json.dumps(state))

    finished = [c for c in pb.commands if isinstance(c, Finished)]
    assert len(finished) <= 1
    if finished:
        after = pb.commands[pb.commands.index(finished[0]) + 1:]
        assert not any(isinstance(c, Push) for c in after)
        assert pb.phase == "done"
        # A finished state restores to nothing to do.
        assert pb.persisted is not None
        assert RolloutEngine.restore(pb.persisted, pb.now)[1] == []
    given_new: set[str] = set()
    for c in pb.commands:
        if not isinstance(c, Push):
            continue
        if c.purpose == "stage":
            given_new |= set(c.assign)
        elif c.purpose == "drop":
            given_new -= set(c.assign)
        elif c.purpose == "rollback":
            assert given_new <= set(c.assign), "a proxy on the new config was not rolled back"
            assert all(v is not None and v.startswith("old-") for v in c.assign.values())
