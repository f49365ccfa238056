"""Regex checks for route matches: RE2 syntax (MCD108) and catastrophic backtracking (MCD109).

The proxy matches with RE2 (linear time), so a pattern that compiles under RE2 is safe there.
MCD109 is about the same pattern in a backtracking engine (Python `re`, PCRE, Java), where
people test it and where exported configs may run: a repeat whose body can split the same
input in more than one way makes such engines take exponential time on a near-miss.

The analyzer walks Python's own parse tree (`re._parser`) and looks, inside every repeat that
can iterate many times (unbounded or at least 10), for a *choice point between iterations*: an
inner repeat, optional part or alternation whose next character could either continue it or
start what follows it (the rest of the body, wrapping round to the next iteration). Examples
it flags: `(a+)+`, `(\\w+\\s?)+`, `(.*a)+`, `([a-z]+-?)*`, `(a|aa)+`, `(\\d+|\\w)+`.
Examples it accepts: `([a-z]+/)+`, `(foo+|bar)+`, `(ab?)+`, `[a-z]+(-[a-z]+)*`. Character
sets are compared on a sample alphabet (ASCII plus a few non-ASCII code points), which is
enough to tell `\\d` from `/` or `\\w` from `\\s`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from typing import Any

import re2

_parser: Any = importlib.import_module("re._parser")
_MAXREPEAT: int = _parser.MAXREPEAT

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors come back as findings, not as stderr noise

# The sample alphabet: every ASCII code point and a few others (Latin-1 letter, NBSP, CJK,
# line separator) so that negated sets and \w / \s differ from their complements.
_ALPHABET = [chr(c) for c in range(128)] + ["\u00e9", "\u00a0", "\u4e2d", "\u2028"]
_ALL = (1 << len(_ALPHABET)) - 1
_REPEATS = {"MAX_REPEAT", "MIN_REPEAT"}  # POSSESSIVE_REPEAT never backtracks
_MANY = 10  # a bounded repeat up to this count is not treated as "many iterations"


def _mask(pred: Any) -> int:
    m = 0
    for i, ch in enumerate(_ALPHABET):
        if pred(ch):
            m |= 1 << i
    return m


_CATEGORIES: dict[str, int] = {}
for _name, _pred in {
    "DIGIT": lambda c: c.isdecimal(),
    "SPACE": lambda c: c.isspace(),
    "WORD": lambda c: c.isalnum() or c == "_",
    "LINEBREAK": lambda c: c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
}.items():
    _m = _mask(_pred)
    for _prefix in ("CATEGORY_", "CATEGORY_LOC_", "CATEGORY_UNI_"):
        _CATEGORIES[_prefix + _name] = _m
        _CATEGORIES[_prefix + "NOT_" + _name] = _ALL & ~_m


_INDEX = {c: i for i, c in enumerate(_ALPHABET)}


def _char_mask(code: int) -> int:
    ch = chr(code)
    i = _INDEX.get(ch)
    if i is not None:
        return 1 << i
    # A character outside the sample alphabet: stand in with the sample's non-ASCII code
    # points of the same kind, so that it still overlaps with \w, \s, \S, `.` and the like.
    return _mask(
        lambda c: ord(c) > 127 and c.isalnum() == ch.isalnum() and c.isspace() == ch.isspace()
    ) or (1 << _INDEX["\u4e2d"])


def compile_error(pattern: str) -> str | None:
    """RE2's complaint about `pattern`, or None when it compiles."""
    try:
        re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as e:
        msg = e.args[0] if e.args else str(e)
        return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return None


class _Node:
    """Summaries of one parse-tree node: can it match empty, which characters can start a
    match (`first`), which can appear anywhere in one (`chars`)."""

    __slots__ = ("chars", "first", "max_len", "min_len", "nullable")

    def __init__(
        self, nullable: bool, first: int, chars: int, min_len: int = 1, max_len: float = 1
    ) -> None:
        self.nullable = nullable
        self.first = first
        self.chars = chars
        self.min_len = 0 if nullable else min_len
        self.max_len = max_len


_INF = float("inf")
_EMPTY_NODE = _Node(True, 0, 0, 0, 0)


def _op(item: tuple[Any, Any]) -> str:
    return str(item[0].name) if hasattr(item[0], "name") else str(item[0])


def _in_mask(items: Sequence[tuple[Any, Any]]) -> int:
    m = 0
    negate = False
    for op, av in items:
        name = op.name
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            m |= _char_mask(av)
        elif name == "RANGE":
            lo, hi = av
            m |= _mask(lambda c, lo=lo, hi=hi: lo <= ord(c) <= hi)
        elif name == "CATEGORY":
            m |= _CATEGORIES.get(av.name, _ALL)
        else:
            m = _ALL
    return _ALL & ~m if negate else m


def _summarize_seq(seq: Sequence[tuple[Any, Any]]) -> _Node:
    nullable = True
    first = 0
    chars = 0
    lo = 0
    hi: float = 0
    for item in seq:
        n = _summarize(item)
        if nullable:
            first |= n.first
        nullable = nullable and n.nullable
        chars |= n.chars
        lo += n.min_len
        hi += n.max_len
    return _Node(nullable, first, chars, lo, hi)


def _summarize(item: tuple[Any, Any]) -> _Node:
    _op_code, av = item
    name = _op(item)
    if name == "LITERAL":
        m = _char_mask(av)
        return _Node(False, m, m)
    if name == "NOT_LITERAL":
        m = _ALL & ~_char_mask(av)
        return _Node(False, m, m)
    if name == "ANY":
        m = _ALL & ~_mask(lambda c: c == "\n")
        return _Node(False, m, m)
    if name == "IN":
        m = _in_mask(av)
        return _Node(False, m, m)
    if name in _REPEATS or name == "POSSESSIVE_REPEAT":
        lo, hi, body = av
        n = _summarize_seq(body)
        top = _INF if hi == _MAXREPEAT or n.max_len == _INF else hi * n.max_len
        return _Node(lo == 0 or n.nullable, n.first, n.chars, lo * n.min_len, top)
    if name in ("SUBPATTERN", "ATOMIC_GROUP"):
        body = av[-1] if name == "SUBPATTERN" else av
        return _summarize_seq(body)
    if name == "BRANCH":
        alts = [_summarize_seq(b) for b in av[1]]
        return _Node(
            any(a.nullable for a in alts),
            _or(a.first for a in alts),
            _or(a.chars for a in alts),
            min(a.min_len for a in alts),
            max(a.max_len for a in alts),
        )
    if name in ("AT", "ASSERT", "ASSERT_NOT"):
        return _EMPTY_NODE
    # GROUPREF, GROUPREF_EXISTS and anything new: assume the worst.
    return _Node(True, _ALL, _ALL, 0, _INF)


def _or(masks: Any) -> int:
    m = 0
    for x in masks:
        m |= x
    return m


def _follow_sets(seq: Sequence[tuple[Any, Any]], after: int) -> list[int]:
    """For each position k: the characters that can come right after item k (the first
    characters of the items after it, through nullable ones, then `after`)."""
    out = [0] * len(seq)
    nxt = after
    for k in range(len(seq) - 1, -1, -1):
        out[k] = nxt
        n = _summarize(seq[k])
        nxt = n.first | (nxt if n.nullable else 0)
    return out


def _choice_point(seq: Sequence[tuple[Any, Any]], after: int) -> str | None:
    """A description of the first ambiguous choice in `seq` when followed by `after`."""
    follows = _follow_sets(seq, after)
    for k, item in enumerate(seq):
        name = _op(item)
        follow = follows[k]
        if name in _REPEATS:
            lo, hi, body = item[1]
            body_node = _summarize_seq(body)
            if lo != hi and body_node.first & follow:
                return "a repeat whose next character could also start what follows it"
            inner = _choice_point(body, body_node.first | follow)
            if inner:
                return inner
        elif name == "SUBPATTERN":
            inner = _choice_point(item[1][-1], follow)
            if inner:
                return inner
        elif name == "BRANCH":
            alts = item[1][1]
            nodes = [_summarize_seq(b) for b in alts]
            why = _ambiguous_branches(alts, nodes, follow)
            if why:
                return why
            if any(n.nullable for n in nodes):
                non_empty = _or(n.first for n in nodes)
                if non_empty & follow:
                    return "an optional alternation whose next character could also start what follows it"
            for alt in alts:
                inner = _choice_point(alt, follow)
                if inner:
                    return inner
    return None


_MAX_PAIRWISE = 64  # alternatives compared pair by pair (literal ones are compared sorted)


def _literal(seq: Sequence[tuple[Any, Any]]) -> str | None:
    """The text of a branch made only of literal characters, else None."""
    out = []
    for item in seq:
        if _op(item) != "LITERAL":
            return None
        out.append(chr(item[1]))
    return "".join(out)


def _ambiguous_branches(
    alts: Sequence[Sequence[tuple[Any, Any]]], nodes: Sequence[_Node], follow: int
) -> str | None:
    """Two branches that can match the same text, or where one is a prefix of the other and
    what follows the branch could continue the longer one: `(b|b?)`, `(\\d+|\\w)`, `(a|ab)b`.
    `(w1|w10)+` is fine: after either branch comes a `w`, never a `0`."""
    literals = [_literal(a) for a in alts]
    texts = sorted(t for t in literals if t is not None)
    for i, p in enumerate(texts):
        for q in texts[i + 1 :]:
            if not q.startswith(p):
                break
            if q == p or _char_mask(ord(q[len(p)])) & follow:
                return "an alternation whose branches can match the same text"
    others = [n for n, t in zip(nodes, literals, strict=True) if t is None][:_MAX_PAIRWISE]
    lits = [n for n, t in zip(nodes, literals, strict=True) if t is not None][:_MAX_PAIRWISE]
    for i, a in enumerate(others):
        for b in [*others[i + 1 :], *lits]:
            if not (a.first & b.first) or (a.chars & ~b.chars and b.chars & ~a.chars):
                continue
            same_length = a.min_len <= b.max_len and b.min_len <= a.max_len
            if same_length or (a.chars | b.chars) & follow:
                return "an alternation whose branches can match the same text"
    return None


def _find_catastrophic(seq: Sequence[tuple[Any, Any]]) -> str | None:
    for item in seq:
        name = _op(item)
        if name in _REPEATS:
            _lo, hi, body = item[1]
            if hi == _MAXREPEAT or hi >= _MANY:
                body_node = _summarize_seq(body)
                # Between iterations, the body is followed by itself.
                why = _choice_point(body, body_node.first)
                if why:
                    return why
            inner = _find_catastrophic(body)
            if inner:
                return inner
        elif name == "SUBPATTERN":
            inner = _find_catastrophic(item[1][-1])
            if inner:
                return inner
        elif name == "BRANCH":
            for alt in item[1][1]:
                inner = _find_catastrophic(alt)
                if inner:
                    return inner
        elif name in ("ASSERT", "ASSERT_NOT"):
            inner = _find_catastrophic(item[1][1])
            if inner:
                return inner
    return None


@functools.lru_cache(maxsize=4096)
def backtracking_risk(pattern: str) -> str | None:
    """Why `pattern` can backtrack catastrophically in a backtracking engine, or None.
    Patterns Python cannot parse (RE2-only syntax) are not judged."""
    try:
        tree = _parser.parse(pattern)
    except Exception:  # re.error, RecursionError, OverflowError on pathological input
        return None
    try:
        why = _find_catastrophic(list(tree))
    except RecursionError:
        return "nesting too deep to analyse"
    if why is None:
        return None
    return f"nested repetition: inside a repeated group, {why}"


@functools.lru_cache(maxsize=4096)
def regex_problem(pattern: str) -> tuple[str, str] | None:
    """(code, message) for a bad route regex, or None. MCD108 wins over MCD109."""
    err = compile_error(pattern)
    if err is not None:
        return ("MCD108", f"regex {pattern!r} does not compile under RE2: {err}")
    risk = backtracking_risk(pattern)
    if risk is not None:
        return (
            "MCD109",
            f"regex {pattern!r} can backtrack catastrophically in backtracking engines "
            f"(Python re, PCRE): {risk} (the proxy's RE2 is linear; tools and exports are not)",
        )
    return None
