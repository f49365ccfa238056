"""Bounded memory of recently seen delivery ids (least recently seen forgotten first)."""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def check_and_add(self, key: str) -> bool:
        """True if `key` was seen before (and refreshes it); otherwise remembers it."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return True
        self._ids[key] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return False

    def forget(self, key: str) -> None:
        """Used when handing a delivery on failed, so the forge's retry is not a duplicate."""
        self._ids.pop(key, None)
