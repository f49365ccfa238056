"""The composition root (`reconciler/controller/app.py`) declares every attribute in
`__init__`: no method assigns an attribute on `self` (one exception: `Controller._parts`,
declared `None` in `__init__` and filled once, by `run()`, with the frozen `Parts` it
built), and nothing asks `hasattr` what exists (the review's rule 7). Read from the
source with `ast`, so a new assignment fails here before it reaches review."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "reconciler" / "controller" / "app.py"


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    if isinstance(node, ast.NamedExpr):
        return [node.target]
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return [node.target]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [i.optional_vars for i in node.items if i.optional_vars is not None]
    return []


def _self_attributes(target: ast.expr) -> list[str]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [a for t in target.elts for a in _self_attributes(t)]
    if isinstance(target, ast.Starred):
        return _self_attributes(target.value)
    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
            and target.value.id == "self"):
        return [target.attr]
    return []


def violations(source: str, filename: str = "app.py") -> list[str]:
    """`file:line: Class.method assigns self.x` for each assignment on `self` outside
    `__init__`, and `file:line: hasattr` for each hasattr call, in every class."""
    found: list[str] = []
    tree = ast.parse(source, filename)
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for fn in cls.body:
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if fn.name == "__init__":
                continue
            for node in ast.walk(fn):
                for target in _targets(node):
                    for attr in _self_attributes(target):
                        found.append(f"{filename}:{node.lineno}: {cls.name}.{fn.name} "
                                     f"assigns self.{attr}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "setattr")):
            found.append(f"{filename}:{node.lineno}: {node.func.id}()")
    return found


FILLED_ONCE = "Controller.run assigns self._parts"


def test_app_declares_every_attribute_in_init() -> None:
    found = violations(APP.read_text(), str(APP))
    assert [v for v in found if not v.endswith(FILLED_ONCE)] == []
    assert len(found) == 1, found  # the one place that fills the parts
    assert "self._parts: Parts | None = None" in APP.read_text()


def test_the_check_sees_assignments_outside_init() -> None:
    src = (
        "class C:\n"
        "    def __init__(self):\n"
        "        self.a = 1\n"
        "    def run(self):\n"
        "        self.b = 2\n"
        "        self.c, (self.d, x) = 3, (4, 5)\n"
        "        self.a += 1\n"
        "        return hasattr(self, 'b')\n"
    )
    got = violations(src)
    assert [v.split(": ", 1)[1] for v in got] == [
        "C.run assigns self.b", "C.run assigns self.c", "C.run assigns self.d",
        "C.run assigns self.a", "hasattr()"]
