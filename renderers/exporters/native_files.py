"""The native format as files: each proxy's snapshot as pretty canonical JSON."""

from __future__ import annotations

from collections.abc import Mapping

from ..native import RenderedSnapshot
from .common import Export


def export_native(snapshots: Mapping[str, RenderedSnapshot]) -> Export:
    """`<proxy id>.json` per proxy: sorted keys, two-space indent, `version` included (what
    `meshcd proxy run --config FILE` takes)."""
    export = Export()
    for pid in sorted(snapshots):
        export.add(f"{pid}.json", snapshots[pid].pretty())
    return export


__all__ = ["export_native"]
