"""Keeping big things small on a page: folded diffs and summarised blast radius. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DIFF_FOLD_BYTES = 64 * 1024
BLAST_TOP = 25


@dataclass(frozen=True, slots=True)
class FoldedText:
    shown: str
    folded: bool
    total_lines: int
    shown_lines: int
    total_bytes: int


def fold_text(text: str, limit_bytes: int = DIFF_FOLD_BYTES) -> FoldedText:
    """`text` as is when it fits `limit_bytes` (UTF-8), else its first whole lines that do."""
    if limit_bytes < 1:
        raise ValueError("limit_bytes must be positive")
    total_bytes = len(text.encode("utf-8"))
    total_lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    if total_bytes <= limit_bytes:
        return FoldedText(text, False, total_lines, total_lines, total_bytes)
    kept: list[str] = []
    used = 0
    for line in text.splitlines(keepends=True):
        size = len(line.encode("utf-8"))
        if used + size > limit_bytes:
            break
        kept.append(line)
        used += size
    return FoldedText("".join(kept), True, total_lines, len(kept), total_bytes)


@dataclass(frozen=True, slots=True)
class BlastSummary:
    shown: tuple[tuple[str, int], ...]
    other_services: int
    other_proxies: int
    total_services: int
    total_proxies: int

    @property
    def summarised(self) -> bool:
        return self.other_services > 0


def summarise_blast(per_service: Sequence[tuple[str, int]], top: int = BLAST_TOP) -> BlastSummary:
    """The `top` services by proxies affected; the rest as one count."""
    ordered = sorted(per_service, key=lambda item: (-item[1], item[0]))
    shown = tuple(ordered[:top])
    rest = ordered[top:]
    return BlastSummary(
        shown=shown,
        other_services=len(rest),
        other_proxies=sum(n for _, n in rest),
        total_services=len(ordered),
        total_proxies=sum(n for _, n in ordered),
    )
