"""Golden files in the style of black's: each case's input rendered in every format must equal
its expected/ files byte for byte. On a mismatch the failure is a unified diff; if the change
is intended, run `python tests/golden/regenerate.py` (`make golden`) and review the diff."""

from __future__ import annotations

import difflib

import pytest
from golden_cases import FORMATS, WARNINGS, cases, expected, rendered

CASES = cases()


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
    assert want, (f"no expected output for {case}/{fmt}: run "
                  "`python tests/golden/regenerate.py` and review it")
    got = rendered(case, fmt)
    if got != want:
        pytest.fail(f"{case}/{fmt} differs from its golden files "
                    f"(intended? `python tests/golden/regenerate.py`, then review):\n"
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
