"""Which rollout actions apply right now, and what a confirmation says. Pure."""

from __future__ import annotations

from reconciler.pages.readmodel import Action, Overview

_DESCRIPTIONS = {
    Action.PROMOTE: "Promote the rollout to its next stage now, without waiting for the bake.",
    Action.PAUSE: "Pause the rollout: no further stage starts until it is resumed.",
    Action.RESUME: "Resume the paused rollout; when the fleet is pinned and no rollout runs, "
    "unpin it (the newest held revision is then deployed).",
    Action.ABORT: "Abort the rollout: canary proxies go back to the deployed revision.",
    Action.ROLLBACK: "Roll the whole fleet back to the chosen revision.",
}


def describe(action: Action) -> str:
    return _DESCRIPTIONS[action]


def available_actions(overview: Overview) -> list[Action]:
    """The actions that make sense in this state (the others are not offered)."""
    actions: list[Action] = []
    rollout = overview.rollout
    if rollout is not None and rollout.state == "running":
        actions += [Action.PROMOTE, Action.PAUSE, Action.ABORT]
    elif rollout is not None and rollout.state == "paused":
        actions += [Action.PROMOTE, Action.RESUME, Action.ABORT]
    elif overview.pinned and (rollout is None or rollout.state not in ("rolling_back",)):
        actions.append(Action.RESUME)  # the controller unpins when no rollout runs
    actions.append(Action.ROLLBACK)
    return actions


def parse_action(text: str) -> Action | None:
    try:
        return Action(text)
    except ValueError:
        return None
