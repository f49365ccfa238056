"""The envelope checks and JSON Schema validation of one document.

`check_envelope` gives the specific codes (MCD010-MCD014) for what every document needs;
`check_schema` validates against the kind's shipped schema and turns each error into MCD020
at the offending field, in plain words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from reconciler.language.codes import finding
from reconciler.language.findings import Finding
from reconciler.language.loader import Document
from reconciler.language.model import API_VERSION, KINDS, FieldPath
from reconciler.language.schema_fast import Check, compile_schema

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Validators whose subschema's `errorMessage` reads better than jsonschema's own words.
_CUSTOM_MESSAGE_VALIDATORS = frozenset({"oneOf", "anyOf", "not", "pattern", "maxLength"})
# Envelope fields: check_envelope reports these with their own codes.
_ENVELOPE_PATHS: frozenset[FieldPath] = frozenset(
    {("apiVersion",), ("kind",), ("metadata",), ("metadata", "name"), ("metadata", "namespace")}
)


def schema_text(kind: str) -> str:
    """The shipped JSON Schema of a kind, as text."""
    return resources.files("reconciler.language").joinpath("schemas", f"{kind.lower()}.json").read_text(
        encoding="utf-8"
    )


@cache
def validator(kind: str) -> Draft202012Validator:
    """Built once per kind and process."""
    schema = json.loads(schema_text(kind))
    return Draft202012Validator(schema)


def is_dns_label(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 63 and _DNS_LABEL.match(value) is not None


@cache
def fast_check(kind: str) -> Check:
    """The compiled yes/no check of a kind's schema (see schema_fast)."""
    return compile_schema(json.loads(schema_text(kind)))


def check_envelope(doc: Document) -> tuple[str | None, list[Finding]]:
    """apiVersion, kind, metadata.name and namespace. Returns (kind or None, findings)."""
    data = doc.data
    pos = doc.positions
    if not isinstance(data, dict):
        what = type(data).__name__ if data is not None else "null"
        what = {"list": "a list", "str": "a string", "int": "a number", "float": "a number",
                "bool": "a boolean"}.get(what, what)
        return None, [finding("MCD010", f"a document must be a mapping, not {what}", doc.location)]
    out: list[Finding] = []
    api = data.get("apiVersion")
    if api != API_VERSION:
        msg = (f"missing apiVersion (expected {API_VERSION})" if api is None
               else f"unknown apiVersion {api!r} (expected {API_VERSION})")
        out.append(finding("MCD011", msg, pos.value_loc(("apiVersion",))))
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(KINDS)
        msg = (f"missing kind (one of {known})" if kind is None
               else f"unknown kind {kind!r} (one of {known})")
        out.append(finding("MCD012", msg, pos.value_loc(("kind",))))
        kind = None
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        msg = "missing metadata" if meta is None else "metadata must be a mapping"
        out.append(finding("MCD013", msg, pos.value_loc(("metadata",))))
    else:
        name = meta.get("name")
        if name is None:
            out.append(finding("MCD013", "missing metadata.name", pos.loc(("metadata",))))
        elif not is_dns_label(name):
            out.append(finding("MCD014", _label_msg("metadata.name", name),
                               pos.value_loc(("metadata", "name"))))
        ns = meta.get("namespace")
        if ns is not None and not is_dns_label(ns):
            out.append(finding("MCD014", _label_msg("metadata.namespace", ns),
                               pos.value_loc(("metadata", "namespace"))))
    return kind, out


def _label_msg(field: str, value: object) -> str:
    return (f"{field} {_short(value)} is not a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)")


def check_schema(doc: Document, kind: str) -> list[Finding]:
    """Every schema error of the document, in (line, column, message) order."""
    if fast_check(kind)(doc.data):
        return []
    v = validator(kind)
    out: list[Finding] = []
    for err in v.iter_errors(doc.data):
        out.extend(_to_findings(doc, err))
    out.sort(key=lambda f: (f.location.line, f.location.column, f.message))
    return out


def display_path(path: Iterable[str | int]) -> str:
    """("spec", "rules", 0, "weight") -> "spec.rules[0].weight"."""
    s = ""
    for p in path:
        if isinstance(p, int):
            s += f"[{p}]"
        else:
            s += f".{p}" if s else p
    return s or "(document)"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TYPE_WORDS = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
    "object": "a mapping", "array": "a list", "null": "null",
}


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "null"


def _to_findings(doc: Document, err: ValidationError) -> list[Finding]:
    path: FieldPath = tuple(err.absolute_path)
    pos = doc.positions
    v = err.validator
    if v == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in err.schema.get("properties", {})]
        where = display_path(path)
        hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        return [
            finding("MCD020", f"{display_path((*path, k))}: unknown field {k!r}{hint}",
                    pos.loc((*path, k)))
            for k in extra
        ] or [finding("MCD020", f"{where}: {err.message}", pos.loc(path))]
    if v == "required":
        if path == () and any(f"'{n}'" in err.message for n in ("apiVersion", "kind", "metadata")):
            return []  # reported by check_envelope
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        if path == ("metadata",) and missing == "name":
            return []
        return [finding("MCD020", f"{display_path(path)}: missing required field {missing!r}",
                        pos.loc(path))]
    if path in _ENVELOPE_PATHS:
        return []
    custom = err.schema.get("errorMessage") if isinstance(err.schema, dict) else None
    if v in _CUSTOM_MESSAGE_VALIDATORS and isinstance(custom, str):
        detail = custom
        if v in ("pattern", "maxLength"):
            detail = f"{_short(err.instance)} {custom}"
    elif v == "type":
        expected = err.validator_value
        names = expected if isinstance(expected, list) else [expected]
        want = " or ".join(_TYPE_WORDS.get(str(n), str(n)) for n in names)
        detail = f"{_short(err.instance)} must be {want}, not {_type_of(err.instance)}"
    elif v == "const":
        detail = f"{_short(err.instance)} must be {_short(err.validator_value)}"
    elif v == "enum":
        choices = ", ".join(str(c) for c in err.validator_value)
        detail = f"{_short(err.instance)} is not one of: {choices}"
    elif v in ("minItems", "maxItems") and isinstance(err.instance, list):
        n = err.validator_value
        word = "at least" if v == "minItems" else "at most"
        detail = f"needs {word} {n} item{'s' if n != 1 else ''}, has {len(err.instance)}"
    elif v in ("exclusiveMaximum", "exclusiveMinimum"):
        word = "less" if v == "exclusiveMaximum" else "greater"
        detail = f"{_short(err.instance)} must be {word} than {err.validator_value}"
    elif v == "uniqueItems":
        detail = f"{_short(err.instance)} has repeated items"
    elif v in ("oneOf", "anyOf", "not"):
        detail = f"{_short(err.instance)} does not match the allowed forms"
    else:
        detail = err.message
    # A bad scalar is pointed at itself; a bad mapping or list at the key that holds it.
    loc = pos.loc(path) if isinstance(err.instance, (dict, list)) else pos.value_loc(path)
    return [finding("MCD020", f"{display_path(path)}: {detail}", loc)]
