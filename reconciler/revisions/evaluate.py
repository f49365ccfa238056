"""Load and validate (`check`), then render and plan (`render_and_plan`) one commit: the
CPU part of the pipeline.

Reads blobs straight from the mirror (no checkout); no sockets, no clock, no store. Run it on
a worker thread: a big repo takes a while.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reconciler.language.model import ConfigModel
from reconciler.language.validate import ValidationCache, validate
from reconciler.plan import format_plan, plan
from reconciler.revisions.decisions import (
    KnownProxy,
    findings_summary,
    plan_summary,
    render_fleet,
)
from reconciler.source.tree import GitTreeSource
from renderers import RenderResult, render


@dataclass
class Evaluated:
    """A commit that validated, rendered and was planned against the deployed one."""

    commit: str
    model: ConfigModel
    render: RenderResult
    plan: dict[str, Any]
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def trust_domain(self) -> str | None:
        mesh = self.model.mesh
        return mesh.trust_domain if mesh is not None else None


@dataclass
class Invalid:
    commit: str
    findings: list[dict[str, Any]]
    reason: str


@dataclass
class Checked:
    """A commit that validated: its model, not yet rendered."""

    commit: str
    model: ConfigModel
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def trust_domain(self) -> str | None:
        mesh = self.model.mesh
        return mesh.trust_domain if mesh is not None else None


def load_and_validate(repo: Any, commit: str, cache: ValidationCache) -> tuple[Any, list[Any]]:
    """(result, error findings). Raises `reconciler.language.sources.ConfigReadError` when the
    commit cannot be read at all."""
    result = validate(GitTreeSource(repo, commit), cache)
    return result, list(result.errors)


def check(repo: Any, commit: str, cache: ValidationCache) -> Checked | Invalid:
    """Load and validate `commit` (once per commit: the queue keeps the answer)."""
    result, errors = load_and_validate(repo, commit, cache)
    if not result.ok:
        return Invalid(commit, findings_summary(result.findings),
                       f"{len(errors)} validation error(s), first: {errors[0]}")
    return Checked(commit, result.model, findings_summary(result.warnings))


def render_and_plan(checked: Checked, *, known: Iterable[KnownProxy],
                    deployed: Evaluated | None) -> Evaluated:
    """Render a validated commit for the fleet and plan it against `deployed`."""
    commit = checked.commit
    fleet = render_fleet(checked.model, known)
    rendered = render(checked.model, fleet,
                      previous=deployed.render.state if deployed is not None else None)
    if deployed is not None:
        old_fleet = render_fleet(deployed.model, known)
        old_render = deployed.render
        if set(old_render.snapshots) != {p.id for p in old_fleet}:
            old_render = render(deployed.model, old_fleet, previous=deployed.render.state)
        p = plan(deployed.model, checked.model, old_render=old_render, new_render=rendered,
                 from_rev=deployed.commit[:12], to_rev=commit[:12])
    else:
        p = plan(None, checked.model, new_render=rendered, to_rev=commit[:12])
    summary = plan_summary(p.to_json(), format_plan(p, "text"))
    return Evaluated(commit, checked.model, rendered, summary, list(checked.warnings))


def evaluate(
    repo: Any,
    commit: str,
    *,
    cache: ValidationCache,
    known: Iterable[KnownProxy],
    deployed: Evaluated | None,
) -> Evaluated | Invalid:
    """Validate `commit`; if clean, render it for the fleet and plan it against `deployed`."""
    checked = check(repo, commit, cache)
    if isinstance(checked, Invalid):
        return checked
    return render_and_plan(checked, known=known, deployed=deployed)
