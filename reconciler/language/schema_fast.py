"""A fast yes/no JSON Schema check, compiled to closures from the shipped schemas.

`jsonschema` is the authority: it produces every error message. But it costs ~2 ms per
document, which is 20 s on a 10,000-document repo, so valid documents (nearly all of them)
are first checked here in ~50 us, and only documents this says are invalid go to jsonschema.

Only the keywords the meshcd schemas use are supported; compiling a schema with any other
keyword raises, so a schema change can never make this check silently weaker. The tests
compare it with jsonschema on the corpus and on random mutations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

_IGNORED = frozenset(
    {"$schema", "$id", "$defs", "title", "description", "errorMessage", "$comment", "default",
     "examples"}
)


def _is_type(value: Any, t: str) -> bool:
    if t == "string":
        return isinstance(value, str)
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if t == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float))
    raise ValueError(f"unknown type {t!r}")


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, pointer: str) -> Check:
        if pointer in self.refs:
            return self.refs[pointer]
        if not pointer.startswith("#/"):
            raise ValueError(f"only local $refs are supported, not {pointer!r}")
        target: Any = self.root
        for part in pointer[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        slot: list[Check] = []

        def deferred(v: Any) -> bool:  # allows recursive schemas
            return slot[0](v)

        self.refs[pointer] = deferred
        slot.append(self.compile(target))
        self.refs[pointer] = slot[0]  # later users call it directly
        return slot[0]

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        checks: list[Check] = []
        s: dict[str, Any] = schema
        for key in s:
            if key not in _IGNORED and key not in _KNOWN:
                raise ValueError(f"unsupported schema keyword {key!r}")
        if "$ref" in s:
            checks.append(self.ref(s["$ref"]))
        typ = s.get("type")
        if typ == "string":
            checks.append(self._string(s))  # type, pattern and lengths in one function
        elif typ == "object" and "properties" in s:
            pass  # the object check below also checks the type
        elif typ in _FAST_TYPES:
            checks.append(_FAST_TYPES[typ])
        elif typ is not None:
            types = tuple(typ) if isinstance(typ, list) else (typ,)
            checks.append(lambda v: any(_is_type(v, t) for t in types))
        if "enum" in s:
            options = list(s["enum"])
            if all(type(o) is str for o in options):
                names = frozenset(options)
                checks.append(lambda v: type(v) is str and v in names)
            else:
                checks.append(lambda v: any(_json_equal(v, o) for o in options))
        if "const" in s:
            const = s["const"]
            checks.append(lambda v: _json_equal(v, const))
        self._numbers(s, checks)
        if typ != "string":
            self._strings(s, checks)
        self._objects(s, checks)
        self._arrays(s, checks)
        self._combinators(s, checks)
        if not checks:
            return lambda v: True
        if len(checks) == 1:
            return checks[0]
        if len(checks) == 2:
            c1, c2 = checks
            return lambda v: c1(v) and c2(v)
        ts = tuple(checks)

        def check_all(v: Any) -> bool:
            for c in ts:  # noqa: SIM110 - a loop is faster than all() over a generator
                if not c(v):
                    return False
            return True

        return check_all

    @staticmethod
    def _string(s: dict[str, Any]) -> Check:
        rx = re.compile(s["pattern"]) if "pattern" in s else None
        lo = s.get("minLength", 0)
        hi = s.get("maxLength")

        def check_string(v: Any) -> bool:
            if not isinstance(v, str):
                return False
            n = len(v)
            if n < lo or (hi is not None and n > hi):
                return False
            return rx is None or rx.search(v) is not None

        return check_string

    def _numbers(self, s: dict[str, Any], checks: list[Check]) -> None:
        if "minimum" in s:
            m = s["minimum"]
            checks.append(lambda v: not _number(v) or v >= m)
        if "maximum" in s:
            m2 = s["maximum"]
            checks.append(lambda v: not _number(v) or v <= m2)
        if "exclusiveMinimum" in s:
            m3 = s["exclusiveMinimum"]
            checks.append(lambda v: not _number(v) or v > m3)
        if "exclusiveMaximum" in s:
            m4 = s["exclusiveMaximum"]
            checks.append(lambda v: not _number(v) or v < m4)

    def _strings(self, s: dict[str, Any], checks: list[Check]) -> None:
        if "pattern" in s:
            rx = re.compile(s["pattern"])
            checks.append(lambda v: not isinstance(v, str) or rx.search(v) is not None)
        if "minLength" in s:
            n = s["minLength"]
            checks.append(lambda v: not isinstance(v, str) or len(v) >= n)
        if "maxLength" in s:
            n2 = s["maxLength"]
            checks.append(lambda v: not isinstance(v, str) or len(v) <= n2)

    def _objects(self, s: dict[str, Any], checks: list[Check]) -> None:
        props = {k: self.compile(v) for k, v in s.get("properties", {}).items()}
        extra = s.get("additionalProperties", True)
        extra_check = None if extra is True else self.compile(extra)
        required = tuple(s.get("required", ()))
        names = self.compile(s["propertyNames"]) if "propertyNames" in s else None
        # With "type": "object" the object check is also the type check.
        strict = s.get("type") == "object" and "properties" in s
        if extra is False and names is None:  # the common case: a closed object

            def check_closed_object(v: Any) -> bool:
                if not isinstance(v, dict):
                    return not strict
                for r in required:
                    if r not in v:
                        return False
                for k, item in v.items():
                    c = props.get(k)
                    if c is None or not c(item):
                        return False
                return True

            checks.append(check_closed_object)
        elif props or extra is not True or required or names is not None:

            def check_object(v: Any) -> bool:
                if not isinstance(v, dict):
                    return not strict
                for r in required:
                    if r not in v:
                        return False
                for k, item in v.items():
                    if names is not None and not names(k):
                        return False
                    c = props.get(k)
                    if c is not None:
                        if not c(item):
                            return False
                    elif extra_check is not None and not extra_check(item):
                        return False
                return True

            checks.append(check_object)
        if "minProperties" in s:
            n = s["minProperties"]
            checks.append(lambda v: not isinstance(v, dict) or len(v) >= n)
        if "maxProperties" in s:
            n2 = s["maxProperties"]
            checks.append(lambda v: not isinstance(v, dict) or len(v) <= n2)

    def _arrays(self, s: dict[str, Any], checks: list[Check]) -> None:
        if "items" in s:
            item = self.compile(s["items"])

            def check_items(v: Any) -> bool:
                if isinstance(v, list):
                    for x in v:
                        if not item(x):
                            return False
                return True

            checks.append(check_items)
        if "minItems" in s:
            n = s["minItems"]
            checks.append(lambda v: not isinstance(v, list) or len(v) >= n)
        if "maxItems" in s:
            n2 = s["maxItems"]
            checks.append(lambda v: not isinstance(v, list) or len(v) <= n2)
        if s.get("uniqueItems"):

            def unique(v: Any) -> bool:
                if not isinstance(v, list):
                    return True
                return not any(_json_equal(v[i], v[j])
                               for i in range(len(v)) for j in range(i + 1, len(v)))

            checks.append(unique)

    def _combinators(self, s: dict[str, Any], checks: list[Check]) -> None:
        if "allOf" in s:
            subs = tuple(self.compile(x) for x in s["allOf"])
            checks.append(lambda v: all(c(v) for c in subs))
        if "anyOf" in s:
            subs2 = tuple(self.compile(x) for x in s["anyOf"])
            checks.append(lambda v: any(c(v) for c in subs2))
        if "oneOf" in s:
            subs3 = tuple(self.compile(x) for x in s["oneOf"])
            checks.append(lambda v: sum(1 for c in subs3 if c(v)) == 1)
        if "not" in s:
            sub = self.compile(s["not"])
            checks.append(lambda v: not sub(v))
        if "if" in s:
            cond = self.compile(s["if"])
            then = self.compile(s.get("then", True))
            other = self.compile(s.get("else", True))
            checks.append(lambda v: then(v) if cond(v) else other(v))


_FAST_TYPES: dict[str, Check] = {
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) is int or type(v) is float,
    "array": lambda v: type(v) is list,
    "boolean": lambda v: type(v) is bool,
    "object": lambda v: type(v) is dict,
    "null": lambda v: v is None,
}

_KNOWN = frozenset(
    {"$ref", "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum",
     "exclusiveMaximum", "pattern", "minLength", "maxLength", "properties",
     "additionalProperties", "required", "propertyNames", "minProperties", "maxProperties",
     "items", "minItems", "maxItems", "uniqueItems", "allOf", "anyOf", "oneOf", "not", "if",
     "then", "else"}
)


def compile_schema(schema: dict[str, Any]) -> Check:
    """A function that says whether a JSON value is valid against `schema`."""
    return _Compiler(schema).compile(schema)
