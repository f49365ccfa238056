"""A case-insensitive, read-only view of request headers that refuses to guess.

HTTP header names are case-insensitive, so `X-Hub-Signature-256` and `x-hub-signature-256`
are the same header. When a header the adapter reads appears twice with different values
(or under two spellings in a plain dict) that is ambiguous, and we refuse rather than pick one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from webhooks.errors import AmbiguousHeader, MissingHeader

# Longer than any real signature, token or id; bounds what we copy into errors and audit.
MAX_VALUE_LEN = 1024


class Headers:
    def __init__(self, source: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        pairs: Iterable[tuple[str, str]]
        # Starlette's Headers is a Mapping whose items() keeps repeated headers; use it.
        pairs = source.items() if isinstance(source, Mapping) else source
        values: dict[str, list[str]] = {}
        for name, value in pairs:
            values.setdefault(str(name).lower(), []).append(str(value))
        self._values = values

    def get(self, name: str) -> str | None:
        found = self._values.get(name.lower())
        if not found:
            return None
        if len(set(found)) > 1:
            raise AmbiguousHeader(f"header {name} appears more than once with different values")
        return found[0]

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None or not value.strip():
            raise MissingHeader(f"header {name} is missing")
        return value.strip()

    def first(self, *names: str) -> str | None:
        """The first of `names` that is present and non-empty."""
        for name in names:
            value = self.get(name)
            if value is not None and value.strip():
                return value.strip()
        return None


def printable(value: str, limit: int = 128) -> str:
    """A value safe to put in an answer or the audit: bounded and without control chars."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in value[:limit])
    return cleaned + ("..." if len(value) > limit else "")
