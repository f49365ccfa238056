"""Golden files in the style of black's: each case's input rendered in every format must equal
its expected/ files byte for byte, and so must every suite of the other texts users read
(plan, validate, rollout status, audit records: golden_cases.suites()). On a mismatch the
failure is a unified diff; if the change is intended, run `make golden` and review the diff."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from golden_audit import audit_records
from golden_cases import (
    FORMATS,
    HERE,
    REVISION_2,
    WARNINGS,
    cases,
    expected,
    plan_texts,
    rendered,
    suite_expected,
    suites,
)

CASES = cases()
SUITES = suites()


def test_the_required_cases_exist() -> None:
    assert {"shop", "canary", "policies", "tcp"} <= set(CASES)


def _diff(case: str, fmt: str, want: dict[str, str], got: dict[str, str]) -> str:
    out: list[str] = []
    for rel in sorted(set(want) | set(got)):
        a, b = want.get(rel), got.get(rel)
        if a == b:
            continue
        if a is None:
            out.append(f"+++ new file {rel} (not in expected/)\n")
        elif b is None:
            out.append(f"--- {rel} is expected but no longer rendered\n")
        else:
            out.extend(difflib.unified_diff(
                a.splitlines(keepends=True), b.splitlines(keepends=True),
                fromfile=f"expected/{fmt}/{rel}", tofile=f"rendered/{fmt}/{rel}"))
    return "".join(out)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, fmt: str) -> None:
    want = expected(case, fmt)
    assert want, f"no expected output for {case}/{fmt}: run `make golden` and review it"
    got = rendered(case, fmt)
    if got != want:
        pytest.fail(f"{case}/{fmt} differs from its golden files "
                    f"(intended? `make golden`, then review):\n"
                    + _diff(case, fmt, want, got), pytrace=False)


def test_diff_names_every_kind_of_difference() -> None:
    d = _diff("c", "istio", {"a.yaml": "x: 1\n", "gone.yaml": "y\n"},
              {"a.yaml": "x: 2\n", "new.yaml": "z\n"})
    assert "-x: 1\n+x: 2\n" in d
    assert "gone.yaml is expected but no longer rendered" in d
    assert "new file new.yaml" in d


def test_every_format_writes_a_warnings_file() -> None:
    for fmt in FORMATS:
        assert WARNINGS in rendered("tcp", fmt)


@pytest.mark.parametrize("folder", sorted(SUITES))
def test_golden_suite(folder: str) -> None:
    want = suite_expected(folder)
    assert want, f"no expected files in tests/golden/{folder}: run `make golden` and review them"
    got = SUITES[folder]()
    if got != want:
        pytest.fail(f"tests/golden/{folder} differs from what meshcd prints now "
                    f"(intended? `make golden`, then review):\n"
                    + _diff(folder, folder, want, got), pytrace=False)


def test_every_case_has_a_second_revision_to_plan() -> None:
    for case in CASES:
        assert (HERE / case / REVISION_2).is_dir(), case
        assert f"{case}/expected/plan" in SUITES


def test_every_corpus_case_has_a_validate_text() -> None:
    corpus = HERE.parent / "corpus"
    names = {p.name for p in corpus.iterdir() if p.is_dir()}
    assert {f"{n}.txt" for n in names} == set(suite_expected("validate"))


def test_every_rollout_audit_kind_has_a_golden_record() -> None:
    """A kind the engine starts writing must get a golden record (a script that emits it)."""
    engine = Path(__file__).resolve().parents[2] / "reconciler" / "rollout" / "engine.py"
    kinds = set(re.findall(r'"(rollout\.[a-z_]+)"', engine.read_text(encoding="utf-8")))
    assert kinds, "no rollout.* kinds found in the engine's source"
    assert {f"{k}.json" for k in kinds} <= set(audit_records())


def test_every_kind_in_the_audit_docs_table_has_a_golden_record() -> None:
    """docs/audit.md's table of kinds is the documented contract: each row is pinned here."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
    kinds = set(re.findall(r"^\| `([a-z]+\.[a-z_]+)` \|", doc.read_text(encoding="utf-8"), re.M))
    assert kinds, "no kinds table found in docs/audit.md"
    assert {f"{k}.json" for k in kinds} <= set(suite_expected("audit"))


@pytest.mark.parametrize("case", CASES)
def test_a_plan_never_says_more_proxies_change_than_there_are(case: str) -> None:
    """An invariant on the rendered plans (black's kind): "N of TOTAL change" with N <= TOTAL,
    in text and markdown alike, also when proxies are removed."""
    for name, text in plan_texts(case).items():
        for n, total in re.findall(r"Proxies:\**\s+(\d+) of (\d+) change", text):
            assert int(n) <= int(total), f"{case}/{name}: {n} of {total} proxies change"
