"""Resource diff: which documents a revision adds, changes or removes, field by field.

Documents are keyed by (kind, namespace, name) and compared as the typed model sees them, so
a moved document, reordered keys, comments or an explicit default change nothing. Each field
change names its YAML path (`spec.rules[0].destinations[1].weight`) and where it sits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Literal

from reconciler.language import model as sm
from reconciler.language.findings import Location

ChangeKind = Literal["added", "changed", "removed"]

# Model fields held as float seconds that the YAML writes as durations.
_DURATIONS = frozenset({
    "timeout", "per_try_timeout", "fixed", "connect_timeout", "interval", "base_ejection_time", "bake",
})
_SKIP = frozenset({"name", "namespace", "labels", "positions", "doc_index"})
_CAMEL_EXCEPTIONS = {"from_": "from", "source_ip": "sourceIP"}


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str  # YAML path, e.g. spec.rules[0].timeout
    old: Any  # JSON-able; None when the field is new
    new: Any  # None when the field is gone
    location: str  # file:line of the field (new revision; old for removals)


@dataclass(frozen=True, slots=True)
class ResourceChange:
    change: ChangeKind
    kind: str
    namespace: str
    name: str
    file: str
    fields: tuple[FieldChange, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "change": self.change, "kind": self.kind, "namespace": self.namespace,
            "name": self.name, "file": self.file,
            "fields": [
                {"path": f.path, "old": f.old, "new": f.new, "location": f.location}
                for f in self.fields
            ],
        }


def _camel(snake: str) -> str:
    if snake in _CAMEL_EXCEPTIONS:
        return _CAMEL_EXCEPTIONS[snake]
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _seconds(v: float) -> str:
    return f"{v * 1000:g}ms" if v < 1 else f"{v:g}s"


def _plain(value: Any, attr: str = "") -> Any:
    """A model value as plain JSON (camelCase keys, service refs as `name.namespace`)."""
    if isinstance(value, sm.ServiceRef):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {
            _camel(f.name): _plain(getattr(value, f.name), f.name)
            for f in fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, sm.FrozenDict):
        return {k: value[k] for k in sorted(value)}
    if isinstance(value, tuple):
        return [_plain(v, attr) for v in value]
    if attr in _DURATIONS and isinstance(value, float | int) and not isinstance(value, bool):
        return _seconds(float(value))
    return value


def document(resource: sm.Resource) -> dict[str, Any]:
    """The resource as its (normalised) YAML document: metadata and spec."""
    meta: dict[str, Any] = {"name": resource.name, "namespace": resource.namespace}
    if resource.labels:
        meta["labels"] = _plain(resource.labels)
    spec = {
        _camel(f.name): _plain(getattr(resource, f.name), f.name)
        for f in fields(resource)
        if f.name not in _SKIP and getattr(resource, f.name) is not None
    }
    return {"kind": resource.KIND, "metadata": meta, "spec": spec}


def _path_text(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _diff(old: Any, new: Any, path: tuple[str | int, ...], out: list[tuple[tuple[str | int, ...], Any, Any]]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(old.keys() | new.keys()):
            _diff(old.get(k), new.get(k), (*path, k), out)
        return
    if isinstance(old, list) and isinstance(new, list):
        if all(not isinstance(v, dict | list) for v in (*old, *new)):
            out.append((path, old, new))  # a list of values (methods, paths): old -> new whole
            return
        for i in range(max(len(old), len(new))):
            _diff(old[i] if i < len(old) else None, new[i] if i < len(new) else None, (*path, i), out)
        return
    out.append((path, old, new))


def _where(loc: Location) -> str:
    return f"{loc.file}:{loc.line}" if loc.line else loc.file


def field_changes(old: sm.Resource, new: sm.Resource) -> tuple[FieldChange, ...]:
    found: list[tuple[tuple[str | int, ...], Any, Any]] = []
    _diff(document(old), document(new), (), found)
    result = []
    for path, o, n in found:
        where = new if n is not None else old
        result.append(FieldChange(_path_text(path), o, n, _where(where.loc(path))))
    return tuple(result)


def resource_diff(old: sm.ConfigModel | None, new: sm.ConfigModel) -> tuple[ResourceChange, ...]:
    """Added, changed and removed documents, sorted by (kind, namespace, name)."""
    from renderers.native.changes import changed_keys, resources_by_key

    old_by = resources_by_key(old) if old is not None else {}
    new_by = resources_by_key(new)
    out: list[ResourceChange] = []
    for key in changed_keys(old_by, new_by):
        o, n = old_by.get(key), new_by.get(key)
        if o is None and n is not None:
            out.append(ResourceChange("added", *key, file=_where(n.location)))
        elif n is None and o is not None:
            out.append(ResourceChange("removed", *key, file=_where(o.location)))
        elif o is not None and n is not None:
            out.append(ResourceChange("changed", *key, file=_where(n.location), fields=field_changes(o, n)))
    return tuple(out)


__all__ = ["ChangeKind", "FieldChange", "ResourceChange", "document", "field_changes", "resource_diff"]
