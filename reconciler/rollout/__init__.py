"""Canary rollout engine (pure core): stages, canary choice and the state machine that
pushes a revision stage by stage, has each stage judged, and rolls back. See docs/rollout.md."""

from reconciler.rollout.engine import RolloutEngine
from reconciler.rollout.messages import (
    OPERATOR_ACTIONS,
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
from reconciler.rollout.stages import (
    DEFAULT_STAGES,
    FAST_STAGES,
    PRESETS,
    RolloutSettings,
    StageSpec,
    Target,
    canary_order,
    settings_for,
    stage_members,
)
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

__all__ = [
    "DEFAULT_STAGES", "FAST_STAGES", "OPERATOR_ACTIONS", "PRESETS", "Acked", "Audit", "Command",
    "Disconnected", "Ending", "Event", "FinalStatus", "Finished", "Nacked", "NewCommit",
    "Operator", "OperatorAction", "Paused", "PendingFinish", "Persist", "Phase", "Push", "Reply",
    "RolloutEngine", "RolloutOutcome", "RolloutSettings", "RolloutSpec", "RolloutState", "RolloutStatus",
    "Signal", "StageOutcome", "StageResult", "StageSpec", "StageVerdict", "StartTimer",
    "StatsReceived", "Target", "TimerFired", "canary_order", "settings_for", "stage_members",
]
