"""Shared by the golden test and regenerate.py: the cases, and what each renders to.

A case is tests/golden/<case>/input/ (a config repo). For every format its expected output
is tests/golden/<case>/expected/<format>/: the exported files, plus WARNINGS.txt (one
warning a line, empty when there are none) - the warnings are part of the spec too.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.spec.sources import DirectorySource
from reconciler.spec.validate import validate
from renderers import default_fleet
from renderers.exporters import FORMATS, export

HERE = Path(__file__).resolve().parent
WARNINGS = "WARNINGS.txt"


def cases() -> list[str]:
    return sorted(p.name for p in HERE.iterdir() if (p / "input").is_dir())


def rendered(case: str, fmt: str) -> dict[str, str]:
    """Relative path -> text of everything `meshcd render --format fmt` writes for the case."""
    result = validate(DirectorySource(HERE / case / "input"))
    if not result.ok:
        raise AssertionError(f"golden case {case} is invalid: {[str(f) for f in result.errors]}")
    out = export(fmt, result.model, default_fleet(result.model))
    files = dict(out.files)
    files[WARNINGS] = "".join(f"{w}\n" for w in out.warnings)
    return files


def expected(case: str, fmt: str) -> dict[str, str]:
    base = HERE / case / "expected" / fmt
    if not base.is_dir():
        return {}
    return {p.relative_to(base).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(base.rglob("*")) if p.is_file()}


__all__ = ["FORMATS", "HERE", "WARNINGS", "cases", "expected", "rendered"]
