"""A ratchet on `dict[str, Any]` annotations: typed data inside, JSON only at the edges.

Counts, per package of the controller (`reconciler.*`) and of the pure cores beside it
(`renderers`, `webhooks`, `proxy_runtime.config`), the annotations (parameters, returns,
annotated assignments) that contain `dict[str, Any]` (or `Dict[str, Any]`), and fails when a
count goes above the number recorded here. The rest of `proxy_runtime` (the data plane, the
Envoy translation) speaks JSON at its edges and is not counted.

When you remove some, lower the number in LIMITS so they cannot come back. A new package starts
at 0: add it to LIMITS with its real count only if it is an edge (wire, store, API)."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Counted on main after this round's merges (2026-12-05): 139 in reconciler, as before issue
# #12: rollout and analysis typed (-8), while the audit anchors, the rejected-delivery summaries,
# the listeners' health and the branch state added JSON edges. Every package not listed
# (auth, ca, store, errors) has 0.
LIMITS: dict[str, int] = {
    "reconciler.analysis": 6,
    "reconciler.audit": 18,
    "reconciler.cli": 11,
    "reconciler.controller": 33,
    "reconciler.fleet": 7,
    "reconciler.net": 1,
    "reconciler.pages": 2,
    "reconciler.plan": 8,
    "reconciler.revisions": 20,
    "reconciler.rollout": 11,
    "reconciler.source": 12,
    "reconciler.language": 11,
    "proxy_runtime.config": 15,
    "renderers": 131,
    "webhooks": 2,
}

PACKAGES = ("reconciler", "renderers", "webhooks", "proxy_runtime/config")
_PATTERN = re.compile(r"\b[Dd]ict\[\s*str\s*,\s*(typing\.)?Any\s*\]")


def _annotations(tree: ast.AST) -> list[ast.expr]:
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return found


def _count(annotation: ast.expr) -> int:
    text = ast.unparse(annotation)
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        text = annotation.value  # a quoted annotation
    return len(_PATTERN.findall(text))


def _package_of(path: Path) -> str:
    """reconciler.<package>, proxy_runtime.<package> (a top-level module counts as one), or
    the root package (renderers, webhooks)."""
    parts = [p for p in path.relative_to(ROOT).with_suffix("").parts if p != "__init__"]
    if parts[0] in ("reconciler", "proxy_runtime") and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def count_dict_any() -> Counter[str]:
    counts: Counter[str] = Counter()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            counts[_package_of(path)] += sum(_count(a) for a in _annotations(tree))
    return counts


def test_dict_str_any_annotations_do_not_grow() -> None:
    counts = count_dict_any()
    grown = {p: (n, LIMITS.get(p, 0)) for p, n in counts.items() if n > LIMITS.get(p, 0)}
    assert not grown, (
        "more dict[str, Any] annotations than recorded (package: (now, limit)): "
        f"{grown}. Give the data a type (a dataclass, a TypedDict at an edge) instead."
    )


def test_the_counter_sees_every_spelling() -> None:
    source = (
        "from typing import Any, Dict\n"
        "def f(a: dict[str, Any], b: 'dict[str, Any]') -> list[Dict[str, Any]]: ...\n"
        "x: dict[str, typing.Any] = {}\n"
        "y: dict[str, int] = {}\n"
        "z = dict[str, Any]\n"  # not an annotation
    )
    tree = ast.parse(source)
    assert sum(_count(a) for a in _annotations(tree)) == 4
