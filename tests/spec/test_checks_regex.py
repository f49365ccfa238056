"""The route-regex checks: RE2 compile errors (MCD108) and the backtracking analyzer (MCD109).

The analyzer's verdicts are checked against reality too: every pattern it flags really does
take far more steps in Python's backtracking `re` on a near-miss input than a pattern it
accepts (measured by the input size at which it stops being instant, not by wall-clock
assertions on a loaded machine: see test_flagged_patterns_really_blow_up)."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from reconciler.language.checks.regex_safety import backtracking_risk, compile_error, regex_problem

CATASTROPHIC = [
    r"(a+)+",
    r"(a*)*b",
    r"(\w+\s?)+$",
    r"(.*a)+x",
    r"([a-z]+-?)*@",
    r"(a|aa)+$",
    r"(\d+|\w)+!",
    r"^(([a-z])+.)+[A-Z]([a-z])+$",
    r"(x+x+)+y",
    r"(?:a?){25}a{25}",
    r"^(\d+\.?\d*)+$",
    r"(?i)(ab|ab?)+c",
    r"^/api/(v[0-9]+/)?((\w+)/?)+$",
]
SAFE = [
    r"^/api/v[0-9]+/users/[a-z0-9-]+$",
    r"([a-z]+/)+",
    r"(foo+|bar)+",
    r"(ab?)+",
    r"[a-z]+(-[a-z]+)*",
    r"([0-9]{1,3}\.){3}[0-9]{1,3}",
    r".*foo.*",
    r"(GET|POST)+",
    r"^/(a|b|c)/.*$",
    r"^/items\d+/[^/]+$",
    r"(ab|ae|cd)+",
    r"^[^/]+(/[^/]+)*$",
    r"\d+(\.\d+)?",
    r"",
]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_catastrophic_patterns_are_flagged(pattern: str) -> None:
    assert compile_error(pattern) is None, "the corpus of MCD109 patterns must be valid RE2"
    assert backtracking_risk(pattern) is not None
    problem = regex_problem(pattern)
    assert problem is not None and problem[0] == "MCD109"


@pytest.mark.parametrize("pattern", SAFE)
def test_safe_patterns_pass(pattern: str) -> None:
    assert regex_problem(pattern) is None


@pytest.mark.parametrize(
    "pattern,fragment",
    [
        ("a(b", "missing )"),
        (r"(a)\1", "invalid escape"),
        ("(?=x)a", "invalid perl operator"),
        ("(?<!x)a", "invalid perl operator"),
        ("a{1001}", "invalid repetition size"),
        ("[z-a]", "invalid character class range"),
        ("*a", "no argument for repetition operator"),
    ],
)
def test_re2_rejects_what_the_proxy_cannot_match(pattern: str, fragment: str) -> None:
    err = compile_error(pattern)
    assert err is not None and fragment in err
    problem = regex_problem(pattern)
    assert problem is not None and problem[0] == "MCD108" and fragment in problem[1]


def test_re2_only_syntax_is_not_judged_by_the_python_analyzer() -> None:
    # \pN and \C are RE2 syntax Python's parser rejects: RE2 accepts, the analyzer abstains.
    assert compile_error(r"^\pN+$") is None
    assert backtracking_risk(r"^\pN+$") is None


def test_pathological_inputs_do_not_crash_the_analyzer() -> None:
    deep = "(" * 400 + "a" + ")" * 400
    assert backtracking_risk(deep) is None or isinstance(backtracking_risk(deep), str)
    wide = "|".join(f"w{i}" for i in range(2000))
    assert backtracking_risk(f"({wide})+") is None
    long_class = "[" + "".join(chr(c) for c in range(0x20, 0x7F) if c not in b"]\\^-") + "]+"
    assert backtracking_risk(long_class) is None


class _Timeout(Exception):
    pass


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise _Timeout

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _survives(pattern: str, text: str, seconds: float) -> bool:
    try:
        with _deadline(seconds):
            re.match(pattern, text)
    except _Timeout:
        return False
    return True


def test_flagged_patterns_really_blow_up() -> None:
    """Ground truth for a few classic cases: on a 40-char near miss, Python's re needs far
    more than the 2 s allowed (exponential: ~2^40 steps), while a safe rewrite of the same
    intent matches a 100k-char input well within it. The generous margins keep this stable
    on a loaded machine."""
    for pattern, text in [
        (r"^(a+)+$", "a" * 40 + "!"),
        (r"^(\w+\s?)+$", "word " * 8 + "a" * 30 + "!"),
    ]:
        assert backtracking_risk(pattern) is not None
        assert not _survives(pattern, text, 2.0), pattern
    for pattern, text in [(r"^a+$", "a" * 100_000 + "!"), (r"^\w+(\s\w+)*$", "word " * 20_000 + "!")]:
        assert backtracking_risk(pattern) is None
        assert _survives(pattern, text, 2.0), pattern
