"""Semantic checks over the whole model (MCD1xx).

The entry point is `run_checks(model) -> list[Finding]`: the validation pipeline
(reconciler.language.validate) calls it once with the `ConfigModel` built from every document that
passed the loader, envelope and schema stages. Each check is one linear pass over one kind,
using the dict indexes of `CheckContext` for lookups, so the whole run is linear in repo size.

Every finding points at the offending field (`resource.loc(("spec", ...))`, the YAML path)
so that the CLI can print `file:line:col: severity MCDxxx: message`.

Where a check's behaviour is a choice, the module that holds it says why: `routes.py` for
MCD111 (explicit POST/PATCH only), `authorization.py` for MCD118 (entry points need an ALLOW
too) and MCD116/125 (rules limited to http ports are fine), `traffic.py` for MCD119 (only a
weakening is reported), `rollout.py` for MCD120, `regex_safety.py` for MCD109, `headers.py`
for MCD131 (what is checked), `listeners.py` for MCD132 (the port layout it assumes).

Per-resource results that depend on nothing else are memoized by object identity
(`LocalMemo`), so with the validation cache a one-file change re-checks only that file's
resources plus the cross-resource checks.
"""

from __future__ import annotations

from reconciler.language.checks import (
    authorization,
    headers,
    listeners,
    mesh,
    rollout,
    routes,
    services,
    traffic,
)
from reconciler.language.checks.context import MEMO, CheckContext, LocalMemo
from reconciler.language.findings import Finding
from reconciler.language.model import ConfigModel

__all__ = ["CheckContext", "LocalMemo", "run_checks"]

_PASSES = (
    mesh.check,
    services.check,
    routes.check,
    headers.check,
    traffic.check,
    authorization.check,
    rollout.check,
    listeners.check,
)


def run_checks(
    model: ConfigModel,
    memo: LocalMemo | None = None,
    *,
    rejected_kinds: frozenset[str] = frozenset(),
) -> list[Finding]:
    """Every semantic finding for `model`, in a stable order (by place, then code).

    `memo` remembers the per-resource findings that depend on nothing else (default: one
    process-wide memo), so that validating the next commit re-checks only what changed; the
    result is the same with or without it. `rejected_kinds` names kinds of documents that
    failed earlier stages, so that a resource with a bad field is not also reported missing."""
    memo = memo if memo is not None else MEMO
    ctx = CheckContext(model, memo, rejected_kinds=rejected_kinds)
    try:
        for run in _PASSES:
            run(ctx)
    finally:
        memo.end_run()
    return sorted(ctx.findings, key=Finding.sort_key)
