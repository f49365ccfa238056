"""Header views and edits for the hot path. Requests keep headers as a list of
(lowercased name, value) bytes pairs; the matchers want str mappings, built only if asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

Header = tuple[bytes, bytes]


class StrHeaders(Mapping[str, str]):
    """A read-only str view of the header list; several values of one name joined with ','.
    Built lazily: a route or policy that never looks at headers costs nothing."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: list[Header]) -> None:
        self._items = items
        self._map: dict[str, str] | None = None

    def _build(self) -> dict[str, str]:
        m: dict[str, str] = {}
        for name, value in self._items:
            key = name.decode("latin-1")
            v = value.decode("latin-1")
            m[key] = f"{m[key]},{v}" if key in m else v
        self._map = m
        return m

    def __getitem__(self, key: str) -> str:
        return (self._map if self._map is not None else self._build())[key]

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return (self._map if self._map is not None else self._build()).get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in (self._map if self._map is not None else self._build())

    def __iter__(self) -> Iterator[str]:
        return iter(self._map if self._map is not None else self._build())

    def __len__(self) -> int:
        return len(self._map if self._map is not None else self._build())


HeaderEdit = Callable[[list[Header]], list[Header]]


def compile_edits(
    add: Mapping[str, str], set_: Mapping[str, str], remove: tuple[str, ...]
) -> HeaderEdit | None:
    """remove, then set (replace every value), then add (append): Envoy's order."""
    if not add and not set_ and not remove:
        return None
    drop = frozenset(n.lower().encode() for n in remove) | frozenset(n.lower().encode() for n in set_)
    sets = [(n.lower().encode(), v.encode()) for n, v in set_.items()]
    adds = [(n.lower().encode(), v.encode()) for n, v in add.items()]

    def edit(headers: list[Header]) -> list[Header]:
        out = [h for h in headers if h[0] not in drop]
        out += sets
        out += adds
        return out

    return edit
