"""Semantic checks over the whole model (MCD1xx). Owned by helper H2.

The agreed entry point is `run_checks(model) -> list[Finding]`: the validation pipeline
(reconciler.spec.validate) calls it once with the `ConfigModel` built from every document
that passed the loader, envelope and schema stages. H2 replaces the body; keep the signature.
Findings should point at fields with `resource.loc(("spec", ...))` and use
`reconciler.spec.codes.finding(code, message, location)`.
"""

from __future__ import annotations

from reconciler.spec.findings import Finding
from reconciler.spec.model import ConfigModel


def run_checks(model: ConfigModel) -> list[Finding]:
    return []
