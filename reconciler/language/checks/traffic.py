"""TrafficPolicy checks: references (MCD101/102), one policy per service and subset (MCD124),
and mTLS modes that conflict with the Mesh (MCD119).

MCD119 fires when a TrafficPolicy (or one of its subsets) *weakens* the mode it inherits:
below the Mesh's mode for the service level, below the service level's mode for a subset
(STRICT > PERMISSIVE > DISABLE). Tightening (STRICT on one service of a PERMISSIVE mesh) is
the normal way to migrate to mTLS and is not reported.
"""

from __future__ import annotations

from reconciler.language.checks.context import CheckContext, where

_STRENGTH = {"DISABLE": 0, "PERMISSIVE": 1, "STRICT": 2}


def check(ctx: CheckContext) -> None:
    for key, tps in ctx.model.traffic_policies_by_service.items():
        first = tps[0]
        for other in tps[1:]:
            ctx.add(
                "MCD124",
                f"second TrafficPolicy for service {other.service}: {first.name!r} already "
                f"configures it ({where(ctx.at(first, 'service'))})",
                ctx.at(other, "service"),
            )
        svc = ctx.model.services_by_key.get(key)
        for tp in tps:
            if svc is None:
                ctx.add("MCD101", f"unknown service {tp.service}", ctx.at(tp, "service"))
            seen: dict[str, int] = {}
            for i, sp in enumerate(tp.subsets):
                if svc is not None and sp.name not in ctx.subset_names[key]:
                    ctx.add(
                        "MCD102",
                        f"service {tp.service} has no subset {sp.name!r}",
                        ctx.at(tp, "subsets", i, "name"),
                    )
                if sp.name in seen:
                    ctx.add(
                        "MCD124",
                        f"subset {sp.name!r} configured twice in one TrafficPolicy "
                        f"(also subsets[{seen[sp.name]}])",
                        ctx.at(tp, "subsets", i, "name"),
                    )
                else:
                    seen[sp.name] = i

            mesh_mode = ctx.mesh_mtls
            svc_mode = tp.mtls.mode if tp.mtls else mesh_mode
            if tp.mtls and _STRENGTH[svc_mode] < _STRENGTH[mesh_mode]:
                ctx.add(
                    "MCD119",
                    f"mTLS mode {svc_mode} for {tp.service} weakens the Mesh's {mesh_mode}: "
                    "its inbound side accepts " + ("plaintext" if svc_mode != "STRICT" else "mTLS only"),
                    ctx.at(tp, "mtls", "mode"),
                )
            for i, sp in enumerate(tp.subsets):
                if sp.mtls and _STRENGTH[sp.mtls.mode] < _STRENGTH[svc_mode]:
                    ctx.add(
                        "MCD119",
                        f"mTLS mode {sp.mtls.mode} for subset {sp.name!r} of {tp.service} weakens "
                        f"the {svc_mode} it inherits",
                        ctx.at(tp, "subsets", i, "mtls", "mode"),
                    )
