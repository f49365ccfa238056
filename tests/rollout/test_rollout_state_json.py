"""The persisted rollout state is read back across versions of the code: the fixture holds
states (and the status each showed) written by the code before the state was typed
(fixtures/persisted_state_v1.json: paused, baking, rolling back, done, a queued next commit).
Each must restore, persist again to the same JSON, and show the same status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.rollout import (
    OPERATOR_ACTIONS,
    Operator,
    OperatorAction,
    Persist,
    Phase,
    Reply,
    RolloutEngine,
    RolloutState,
    RolloutStatus,
)

FIXTURE = Path(__file__).parent / "fixtures" / "persisted_state_v1.json"
CASES: dict[str, dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_state_persisted_by_the_previous_code_restores_unchanged(name: str) -> None:
    case = CASES[name]
    state = RolloutState.from_json(case["state"])
    assert _json(state.to_json()) == case["state"]
    engine, cmds = RolloutEngine.restore(case["state"], case["now"])
    if case["state"]["phase"] in ("paused", "done"):
        # Nothing to repeat: the restored engine shows what the old one showed.
        assert _json(engine.status(case["now"])) == case["status"]
    persisted = [c.state for c in cmds if isinstance(c, Persist)]
    if persisted:
        again = _json(persisted[-1])
        assert again["format"] == case["state"]["format"]
        assert again["history"] == case["state"]["history"]
        assert again["lastVerdict"] == case["state"]["lastVerdict"]


def test_the_fixture_covers_every_typed_part() -> None:
    states = [c["state"] for c in CASES.values()]
    assert {s["phase"] for s in states} == {"paused", "baking", "rolling_back", "done"}
    for key in ("paused", "pendingFinish", "lastVerdict", "outcome", "nextRevision"):
        assert any(s[key] is not None for s in states), key
    assert any(h["outcome"] == "Promoted" for s in states for h in s["history"])
    signals = {s["lastVerdict"].get("signal") for s in states if s["lastVerdict"]}
    assert {"nack", "ack_timeout"} <= signals


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_status_shown_by_the_previous_code_reads_back_typed(name: str) -> None:
    status = CASES[name]["status"]
    typed = RolloutStatus.from_json(status)
    assert _json(typed.to_json()) == status
    extra = {**status, "revisionId": 7, "commit": "c0ffee", "startedAt": 5.0}
    assert _json(RolloutStatus.from_json(extra).to_json()) == extra


def test_a_status_without_a_field_is_refused_by_name() -> None:
    status = dict(next(iter(CASES.values()))["status"])
    del status["waitingForAck"]
    with pytest.raises(ValueError, match="waitingForAck"):
        RolloutStatus.from_json(status)


def test_an_operator_action_is_one_enum_and_an_unknown_word_is_refused() -> None:
    assert Operator("promote-full", "user:a", 0.0).action is OperatorAction.PROMOTE_FULL
    assert tuple(a.value for a in OperatorAction) == OPERATOR_ACTIONS
    case = CASES["paused_after_failure"]
    engine, _ = RolloutEngine.restore(case["state"], case["now"])
    replies = [c for c in engine.handle(Operator("shout", "user:a", case["now"]))
               if isinstance(c, Reply)]
    assert [(r.accepted, r.message) for r in replies] == [(False, "unknown action 'shout'")]
    assert engine.phase is Phase.PAUSED
