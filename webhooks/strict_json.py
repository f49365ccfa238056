"""Strict JSON for webhook bodies, and typed access to what we read from it.

Python's `json` module accepts things a hostile sender can use to confuse a receiver:
NaN/Infinity, duplicate keys (which one wins?), any top-level value, and any byte encoding
it can sniff. Here the body must be UTF-8, an object at the top, with no duplicate keys and
only finite numbers. Every field read goes through `Obj`, which raises `InvalidPayload` with
the JSON path on a missing field or a wrong type.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from webhooks.errors import InvalidJson, InvalidPayload
from webhooks.model import is_zero

_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
# A conservative subset of `git check-ref-format`: what a forge will actually send.
_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)")
MAX_REF_LEN = 1024


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # built in C; only when sizes differ do we look for the culprit
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return out


# One decoder for every body: building it per call costs as much as parsing a small body.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constants, parse_float=_finite_float
)


def loads_object(body: bytes) -> Obj:
    """Parse `body` strictly; the top level must be an object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidJson(f"body is not UTF-8 (byte {err.start})") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise InvalidJson("body nests too deeply") from None
    except ValueError as err:  # JSONDecodeError, our hooks, int digit limits
        raise InvalidJson(f"body is not valid JSON: {str(err)[:120]}") from None
    if not isinstance(value, dict):
        raise InvalidJson(f"top level must be a JSON object, not {_kind(value)}")
    return Obj(value, "$")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _clean_string(value: str, path: str) -> str:
    # Lone surrogates parse fine but blow up later when encoded for logs or audit.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPayload(f"{path} is not valid Unicode") from None
    return value


class Obj:
    """A JSON object plus its path, with typed getters."""

    __slots__ = ("_path", "_value")

    def __init__(self, value: dict[str, Any], path: str) -> None:
        self._value = value
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def keys(self) -> set[str]:
        return set(self._value)

    def has(self, key: str) -> bool:
        return key in self._value

    def raw(self, key: str) -> object:
        """The untyped value (None when absent), for fields that come in two shapes."""
        return self._value.get(key)

    def _get(self, key: str, expected: str) -> Any:
        if key not in self._value:
            raise InvalidPayload(f"{self._path}.{key} is missing ({expected} expected)")
        return self._value[key]

    def _wrong(self, key: str, expected: str, value: object) -> InvalidPayload:
        return InvalidPayload(f"{self._path}.{key} must be {expected}, not {_kind(value)}")

    def string(self, key: str) -> str:
        value = self._get(key, "a string")
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return _clean_string(value, f"{self._path}.{key}")

    def opt_string(self, key: str) -> str | None:
        """A string, or None when the key is absent or null."""
        value = self._value.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._wrong(key, "a string or null", value)
        return _clean_string(value, f"{self._path}.{key}")

    def obj(self, key: str) -> Obj:
        value = self._get(key, "an object")
        if not isinstance(value, dict):
            raise self._wrong(key, "an object", value)
        return Obj(value, f"{self._path}.{key}")

    def opt_obj(self, key: str) -> Obj | None:
        value = self._value.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._wrong(key, "an object or null", value)
        return Obj(value, f"{self._path}.{key}")

    def arr(self, key: str) -> list[Any]:
        value = self._get(key, "an array")
        if not isinstance(value, list):
            raise self._wrong(key, "an array", value)
        return value

    def opt_arr(self, key: str) -> list[Any] | None:
        value = self._value.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._wrong(key, "an array or null", value)
        return value

    def objs(self, key: str) -> list[Obj]:
        """An array whose items must all be objects."""
        out: list[Obj] = []
        for index, item in enumerate(self.arr(key)):
            if not isinstance(item, dict):
                raise InvalidPayload(
                    f"{self._path}.{key}[{index}] must be an object, not {_kind(item)}"
                )
            out.append(Obj(item, f"{self._path}.{key}[{index}]"))
        return out

    def opt_bool(self, key: str) -> bool | None:
        value = self._value.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._wrong(key, "a boolean", value)
        return value

    def sha(self, key: str) -> str:
        return check_sha(self.string(key), f"{self._path}.{key}")

    def ref(self, key: str) -> str:
        return check_ref(self.string(key), f"{self._path}.{key}")


def check_sha(value: str, path: str) -> str:
    """A commit id: 40 (SHA-1) or 64 (SHA-256) hex digits, returned lower-case."""
    if not _SHA.fullmatch(value):
        raise InvalidPayload(f"{path} must be 40 or 64 hex digits")
    return value.lower()


def check_pair(before: str, after: str, path: str) -> None:
    if len(before) != len(after):
        raise InvalidPayload(f"{path}: before and after use different hash lengths")
    if is_zero(before) and is_zero(after):
        raise InvalidPayload(f"{path}: before and after cannot both be zero")


def check_ref(value: str, path: str) -> str:
    """A full ref name (refs/...), shaped the way git allows."""
    if (
        not value.startswith("refs/")
        or len(value) > MAX_REF_LEN
        or value.endswith(("/", "."))
        or _REF_BAD.search(value)
    ):
        raise InvalidPayload(f"{path} is not a valid full ref name")
    return value
