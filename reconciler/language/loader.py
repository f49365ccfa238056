"""YAML bytes -> plain JSON-like documents with the position of every field.

libyaml's composer (yaml.CSafeLoader) builds the node graph fast; the plain values are built
here so that every mapping key and value keeps its line and column, duplicate keys are caught,
alias expansion is bounded, and any type JSON cannot hold is reported. Every bad input becomes
a Finding: nothing but a bug raises out of `load_yaml`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.language.codes import finding
from reconciler.language.findings import Finding, Location, Severity
from reconciler.language.model import FieldPath, Positions, Spot

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_TAG_WORDS = {
    "tag:yaml.org,2002:timestamp": "a timestamp (quote it to make it a string)",
    "tag:yaml.org,2002:binary": "binary data",
    "tag:yaml.org,2002:set": "a set",
    "tag:yaml.org,2002:omap": "an ordered map",
    "tag:yaml.org,2002:pairs": "a list of pairs",
    "tag:yaml.org,2002:value": "a value key (=)",
}

_constructor = yaml.constructor.SafeConstructor()

# Implicit tags of plain scalars, by text. Config repos repeat the same few thousand words, and
# PyYAML's resolver tries a list of regexes per scalar: caching makes composing ~30% faster.
_PLAIN_TAGS: dict[str, str] = {}


class _Loader(_BaseLoader):  # type: ignore[misc]
    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            if not implicit[0]:
                return _STR
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_PLAIN_TAGS) < 50_000 and len(value) < 64:
                    _PLAIN_TAGS[value] = tag
            return tag
        return _SEQ if kind is SequenceNode else _MAP

    # The composer calls these two for every node; with no path resolvers they do nothing.
    # C builtins that take the same arguments and do nothing are cheaper than Python no-ops
    # (builtins are not descriptors, so they are called without `self`).
    descend_resolver = operator.is_
    ascend_resolver = tuple


@dataclass(frozen=True, slots=True)
class LoadLimits:
    max_file_size: int = 1024 * 1024
    max_documents_per_file: int = 1000
    max_documents_per_repo: int = 200_000
    node_budget: int = 400_000  # nodes built per file, counting every alias expansion
    max_depth: int = 200  # nesting of mappings and sequences


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document of a file as plain data, with positions."""

    file: str
    index: int  # 0-based within the file
    data: Any
    positions: Positions

    @property
    def location(self) -> Location:
        return self.positions.value_loc(())


class _Stop(Exception):
    """Abandon the current document (the finding is already recorded)."""


def _mark_loc(file: str, mark: Any) -> Location:
    if mark is None:
        return Location(file)
    return Location(file, mark.line + 1, mark.column + 1)


def _offset_loc(file: str, data: bytes, offset: int) -> Location:
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return Location(file, line, col)


class _Builder:
    """Turns one document's node graph into plain values. Positions are not copied out: the
    node graph is kept and walked only for the fields a finding names (see _NodeLookup)."""

    __slots__ = ("budget", "depth_limit", "file", "findings", "merges")

    def __init__(self, file: str, budget: int, depth_limit: int, merges: bool = True) -> None:
        self.file = file
        self.budget = budget
        self.depth_limit = depth_limit
        self.findings: list[Finding] = []
        self.merges = merges  # False when the text has no "<<": skip looking for merge keys

    def loc(self, node: Node) -> Location:
        return _mark_loc(self.file, node.start_mark)

    def bad(self, code: str, msg: str, node: Node) -> None:
        self.findings.append(finding(code, msg, self.loc(node)))

    def build(self, node: Node, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            self.bad(
                "MCD003",
                "document expands to too many nodes (alias/anchor bomb?); not loaded",
                node,
            )
            raise _Stop
        tag = node.tag
        if isinstance(node, ScalarNode):
            if tag == _STR:
                return node.value
            return self.scalar(node, tag)
        if depth >= self.depth_limit:
            self.bad("MCD016", f"nesting deeper than {self.depth_limit} levels; not loaded", node)
            raise _Stop
        if isinstance(node, MappingNode):
            if tag != _MAP:
                self.bad("MCD015", f"{self.tag_words(tag)} cannot be held in JSON", node)
                return None
            return self.mapping(node, depth)
        if isinstance(node, SequenceNode):
            if tag != _SEQ:
                self.bad("MCD015", f"{self.tag_words(tag)} cannot be held in JSON", node)
                return None
            build = self.build
            return [build(item, depth + 1) for item in node.value]
        raise AssertionError(f"unknown node {node!r}")  # pragma: no cover

    @staticmethod
    def tag_words(tag: str) -> str:
        return _TAG_WORDS.get(tag) or f"a value tagged {tag!r}"

    def scalar(self, node: ScalarNode, tag: str) -> Any:
        try:
            if tag == _INT:
                v = node.value
                if v.isdigit() and (v[0] != "0" or len(v) == 1) and v.isascii():
                    return int(v)  # the common case; YAML 1.1's 0x, 0o, 010, 1_000, 1:30 below
                return _constructor.construct_yaml_int(node)
            if tag == _BOOL:
                return _constructor.construct_yaml_bool(node)
            if tag == _NULL:
                return None
            if tag == _FLOAT:
                f = _constructor.construct_yaml_float(node)
                if math.isinf(f) or math.isnan(f):
                    self.bad("MCD015", f"{node.value!r} is not a finite number", node)
                    return None
                return f
        except (ValueError, yaml.YAMLError):
            self.bad("MCD015", f"{node.value!r} is not a valid {tag.rsplit(':', 1)[-1]}", node)
            return None
        self.bad("MCD015", f"{self.tag_words(tag)} cannot be held in JSON", node)
        return None

    def mapping(self, node: MappingNode, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pairs = node.value
        if self.merges and any(k.tag == _MERGE for k, _ in pairs):
            pairs = self.merged(node)
        build = self.build
        for knode, vnode in pairs:
            if knode.tag != _STR or not isinstance(knode, ScalarNode):
                what = "a mapping or list" if not isinstance(knode, ScalarNode) else repr(knode.value)
                self.bad("MCD015", f"mapping key {what} is not a string (quote it)", knode)
                continue
            key = knode.value
            if key in out:
                first = next(k for k, _ in pairs if k.tag == _STR and k.value == key).start_mark
                self.bad(
                    "MCD002",
                    f"duplicate key {key!r} (first at line {first.line + 1}, column "
                    f"{first.column + 1})",
                    knode,
                )
                continue
            if vnode.tag == _STR and isinstance(vnode, ScalarNode):  # the common case, inlined
                self.budget -= 1
                out[key] = vnode.value
            else:
                out[key] = build(vnode, depth + 1)
        if self.budget < 0:
            self.bad("MCD003", "document expands to too many nodes (alias/anchor bomb?); not "
                     "loaded", node)
            raise _Stop
        return out

    def merged(self, node: MappingNode) -> list[tuple[Node, Node]]:
        """YAML 1.1 merge keys (`<<: *base`): explicit keys win over merged ones."""
        explicit: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for knode, vnode in node.value:
            if knode.tag != _MERGE:
                explicit.append((knode, vnode))
                continue
            sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
            for src in sources:
                self.budget -= 1
                if not isinstance(src, MappingNode) or src.tag != _MAP:
                    self.bad("MCD015", "a merge key (<<) takes a mapping or a list of mappings", src)
                    continue
                sub = src.value
                if any(k.tag == _MERGE for k, _ in sub):
                    sub = self.merged(src)
                self.budget -= len(sub)
                if self.budget < 0:
                    self.bad("MCD003", "merge keys expand to too many nodes; not loaded", src)
                    raise _Stop
                merged.extend(sub)
        names = {k.value for k, _ in explicit if isinstance(k, ScalarNode)}
        seen: set[str] = set()
        out = list(explicit)
        for k, v in merged:
            name = k.value if isinstance(k, ScalarNode) else None
            if name in names or name in seen:
                continue  # explicit keys, and earlier merged mappings, win
            if name is not None:
                seen.add(name)
            out.append((k, v))
        return out


def _spot(key: Node, value: Node) -> Spot:
    k, v = key.start_mark, value.start_mark
    return (k.line + 1, k.column + 1, v.line + 1, v.column + 1)


def _pairs(node: MappingNode, depth: int = 0) -> list[tuple[Node, Node]]:
    """A mapping's key/value nodes as the builder saw them: merge keys expanded, explicit keys
    first. Only documents that loaded cleanly are looked up, so no budget is needed."""
    pairs: list[tuple[Node, Node]] = [(k, v) for k, v in node.value if k.tag != _MERGE]
    if depth > 50:
        return pairs
    for k, v in node.value:
        if k.tag == _MERGE:
            for src in v.value if isinstance(v, SequenceNode) else [v]:
                if isinstance(src, MappingNode):
                    pairs.extend(_pairs(src, depth + 1))
    return pairs


class _NodeLookup:
    """Finds the spot of a field path by walking a document's node graph."""

    __slots__ = ("root",)

    def __init__(self, root: Node) -> None:
        self.root = root

    def __call__(self, path: FieldPath) -> Spot | None:
        node = self.root
        key: Node = node
        for part in path:
            if isinstance(node, MappingNode) and isinstance(part, str):
                for k, v in _pairs(node):
                    if isinstance(k, ScalarNode) and k.value == part and k.tag == _STR:
                        key, node = k, v
                        break
                else:
                    return None
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = key = node.value[part]
            else:
                return None
        return _spot(key, node)


def load_yaml(
    file: str, data: bytes, limits: LoadLimits | None = None
) -> tuple[list[Document], list[Finding]]:
    """Parse one file. Returns the documents that loaded cleanly, and the findings.

    A document with any error is left out (its findings say why); empty documents are skipped.
    """
    limits = limits or LoadLimits()
    findings: list[Finding] = []
    nul = data.find(b"\x00")
    if nul >= 0:
        return [], [finding("MCD005", "file contains NUL bytes (binary?); not read",
                            _offset_loc(file, data, nul))]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return [], [finding("MCD004", f"not valid UTF-8 (byte 0x{data[e.start]:02x}); not read",
                            _offset_loc(file, data, e.start))]
    if text.startswith("\ufeff"):
        text = text[1:]
    docs: list[Document] = []
    budget = limits.node_budget
    merges = "<<" in text
    try:
        loader = _Loader(text)
    except yaml.YAMLError as e:  # pragma: no cover - the C reader checks lazily
        return [], [_yaml_error(file, data, e)]
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if index >= limits.max_documents_per_file:
                findings.append(finding(
                    "MCD008",
                    f"more than {limits.max_documents_per_file} documents in one file; the rest "
                    "are not loaded",
                    _mark_loc(file, node.start_mark),
                ))
                break
            this = index
            index += 1
            if isinstance(node, ScalarNode) and node.tag == _NULL and node.value in ("", "~", "null"):
                continue  # an empty document
            b = _Builder(file, budget, limits.max_depth, merges)
            try:
                value = b.build(node, 0)
            except _Stop:
                value = None
            budget = max(b.budget, 0)
            if b.findings:
                findings.extend(b.findings)
                if budget == 0:
                    break
                continue
            docs.append(Document(file, this, value, Positions(file, lookup=_NodeLookup(node))))
    except yaml.YAMLError as e:
        findings.append(_yaml_error(file, data, e))
    except RecursionError:  # pragma: no cover - max_depth keeps far below the limit
        findings.append(finding("MCD016", "nesting too deep; not loaded", Location(file)))
    finally:
        loader.dispose()
    return docs, findings


def _yaml_error(file: str, data: bytes, e: yaml.YAMLError) -> Finding:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    context_mark = getattr(e, "context_mark", None)
    if context_mark is not None and mark is not None and _at_end(data, mark):
        mark = context_mark  # an unclosed quote or bracket: point at where it opened
    if isinstance(e, yaml.MarkedYAMLError):
        parts = [p for p in (e.context, e.problem) if p]
        msg = ", ".join(parts) or "invalid YAML"
        loc = _mark_loc(file, mark)
    else:
        msg = str(getattr(e, "reason", "") or e).splitlines()[0] or "invalid YAML"
        pos = getattr(e, "position", None)
        loc = Location(file)
        if isinstance(pos, int):
            loc = _char_loc(file, data, pos)
    return finding("MCD001", f"YAML syntax error: {msg}", loc)


def _at_end(data: bytes, mark: Any) -> bool:
    """Whether a mark is past the last non-blank character."""
    index = getattr(mark, "index", None)
    if not isinstance(index, int):
        return False
    return index >= len(data.decode("utf-8", "replace").rstrip())


def _char_loc(file: str, data: bytes, char_pos: int) -> Location:
    text = data.decode("utf-8", "replace")[:char_pos]
    line = text.count("\n") + 1
    return Location(file, line, char_pos - (text.rfind("\n") + 1) + 1)


def is_error(f: Finding) -> bool:
    return f.severity is Severity.ERROR
