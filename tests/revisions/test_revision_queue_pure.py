"""The revision queue is a pure core: no I/O, no clock, no threads (the pure-core rule of
docs/architecture; import-linter's contracts do not cover it yet)."""

from __future__ import annotations

import ast
from pathlib import Path

import reconciler.revisions.queue as queue_module

ALLOWED = {"__future__", "enum", "collections.abc", "dataclasses", "datetime", "typing",
           "reconciler.revisions.decisions", "reconciler.revisions.model"}


def test_the_queue_imports_only_pure_modules() -> None:
    tree = ast.parse(Path(queue_module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert imported <= ALLOWED, imported - ALLOWED


def test_the_queue_reads_no_clock() -> None:
    text = Path(queue_module.__file__).read_text()
    for call in ("datetime.now(", "time.time(", "time.monotonic(", "utcnow("):
        assert call not in text
