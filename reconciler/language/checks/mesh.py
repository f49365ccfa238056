"""Repo-wide checks: exactly one Mesh (MCD100), unique names (MCD105), and the Mesh's default
RolloutPolicy exists (MCD122)."""

from __future__ import annotations

from reconciler.language.checks.context import CheckContext, where
from reconciler.language.findings import Location
from reconciler.language.model import DEFAULT_NAMESPACE, Resource

# Where a repo-wide finding with no document to point at is reported: the repo root.
REPO_ROOT = Location(".")


def check(ctx: CheckContext) -> None:
    model = ctx.model
    if not model.meshes:
        if "Mesh" not in ctx.rejected_kinds:  # a Mesh with a bad field is reported already
            ctx.add("MCD100", "no Mesh document: a repo needs exactly one (kind: Mesh)", REPO_ROOT)
    else:
        first = model.meshes[0]
        for extra in model.meshes[1:]:
            ctx.add(
                "MCD100",
                f"more than one Mesh: {extra.name!r} here, {first.name!r} at {where(first.location)}",
                extra.location,
            )

    seen: dict[tuple[str, str, str], Resource] = {}
    for r in model.resources():
        if r.KIND == "Mesh":
            continue  # several Meshes are MCD100
        prev = seen.setdefault(r.key, r)
        if prev is not r:
            ctx.add(
                "MCD105",
                f"duplicate {r.KIND} {r.name!r} in namespace {r.namespace!r} "
                f"(first defined at {where(prev.loc(('metadata', 'name')))})",
                r.loc(("metadata", "name")),
            )

    mesh = ctx.mesh
    if mesh is not None and mesh.default_rollout_policy is not None:
        name = mesh.default_rollout_policy
        found = any(
            (ns, name) in model.rollout_policies_by_key
            for ns in (mesh.root_namespace, DEFAULT_NAMESPACE)
        )
        if not found:
            ctx.add(
                "MCD122",
                f"defaultRolloutPolicy {name!r}: no RolloutPolicy of that name in namespace "
                f"{mesh.root_namespace!r} or {DEFAULT_NAMESPACE!r}",
                mesh.loc(("spec", "defaultRolloutPolicy")),
            )
