"""Shared by the golden test and regenerate.py: the cases, and what each renders to.

A case is tests/golden/<case>/input/ (a config repo). For every format its expected output
is tests/golden/<case>/expected/<format>/: the exported files, plus WARNINGS.txt (one
warning a line, empty when there are none) - the warnings are part of the spec too.

The other texts users read are *suites* (suites() below), one folder each:
<case>/expected/plan/ (`meshcd plan` text and markdown, from nothing to input/ and from
input/ to revision-2/), validate/ (`meshcd validate` on every tests/corpus case), rollout/
(`meshcd rollout status` from scripted rollouts, golden_rollout.py) and audit/ (one record
per audit kind, golden_audit.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.language.model import ConfigModel
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from reconciler.plan import format_plan, plan
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



# --- the other texts users read -----------------------------------------------------------
# Each of these is a *suite*: a folder under tests/golden whose files are all rendered by one
# function. The test compares the whole folder (a file rendered but not expected, or expected
# but no longer rendered, is a difference too); regenerate.py rewrites it.

REVISION_2 = "revision-2"
FROM_NOTHING = ("tcp",)
CORPUS = HERE.parent / "corpus"


def _model(path: Path) -> ConfigModel:
    result = validate(DirectorySource(path))
    if not result.ok:
        raise AssertionError(f"golden input {path} is invalid: {[str(f) for f in result.errors]}")
    return result.model


def plan_texts(case: str) -> dict[str, str]:
    """`meshcd plan --format text|markdown` for the case: from input/ to revision-2/ and, for
    the cases in FROM_NOTHING, from nothing to input/ (every proxy's whole config is in that
    one, so it is pinned for the smallest case only). Revisions are named, not hashed, so the
    text does not change with a commit id."""
    base = HERE / case
    first = _model(base / "input")
    plans = {"from-nothing": plan(None, first, to_rev="input")} if case in FROM_NOTHING else {}
    if (base / REVISION_2).is_dir():
        plans[f"to-{REVISION_2}"] = plan(first, _model(base / REVISION_2),
                                         from_rev="input", to_rev=REVISION_2)
    out: dict[str, str] = {}
    for name, p in plans.items():
        out[f"{name}.txt"] = format_plan(p, "text")
        out[f"{name}.md"] = format_plan(p, "markdown")
    return out


def _corpus_cases() -> list[str]:
    return sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


# The corpus's options.json limits, as `meshcd validate` options. A limit the command has no
# option for is left at its default, so the golden file shows what a user running the command
# sees: too-many-documents (max_documents_per_file 3) is clean there.
_LIMIT_OPTIONS = {"max_file_size": "--max-file-size", "max_documents_per_repo": "--max-documents"}


def validate_texts() -> dict[str, str]:
    """`meshcd validate --format text CASE` run in tests/corpus for every corpus case: what
    the terminal shows (stdout and stderr), then the exit status (one file per case)."""
    runner = CliRunner()
    out: dict[str, str] = {}
    cwd = os.getcwd()
    os.chdir(CORPUS)
    try:
        for case in _corpus_cases():
            args = ["--format", "text", case]
            opts = CORPUS / case / "options.json"
            if opts.exists():
                for key, value in json.loads(opts.read_text(encoding="utf-8")).items():
                    if key in _LIMIT_OPTIONS:
                        args += [_LIMIT_OPTIONS[key], str(value)]
            r = runner.invoke(cli, ["validate", *args])
            if r.exception is not None and not isinstance(r.exception, SystemExit):
                raise AssertionError(f"meshcd validate {case} raised {r.exception!r}")
            out[f"{case}.txt"] = f"{r.output}[exit status {r.exit_code}]\n"
    finally:
        os.chdir(cwd)
    return out


def suites() -> dict[str, Callable[[], dict[str, str]]]:
    """Folder under tests/golden -> the function that renders every file in it."""
    from golden_audit import audit_records
    from golden_rollout import rollout_texts

    out: dict[str, Callable[[], dict[str, str]]] = {
        f"{case}/expected/plan": (lambda case=case: plan_texts(case))  # type: ignore[misc]
        for case in cases()
    }
    out["validate"] = validate_texts
    out["rollout"] = rollout_texts
    out["audit"] = audit_records
    return out


def suite_expected(folder: str) -> dict[str, str]:
    base = HERE / folder
    if not base.is_dir():
        return {}
    return {p.relative_to(base).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(base.rglob("*")) if p.is_file()}


__all__ = ["FORMATS", "HERE", "WARNINGS", "cases", "expected", "plan_texts", "rendered",
           "suite_expected", "suites", "validate_texts"]
