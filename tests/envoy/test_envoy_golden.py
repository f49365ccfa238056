"""Every golden case's snapshots, translated and pushed to a real Envoy over ADS, are ACKed:
RBAC, faults, retries, mirroring, header edits, hashing, outlier detection, circuit breakers,
mTLS over SDS, TCP forwards. Listener ports are moved to free ones (never a fixed port)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from envoy_harness import envoy_plane, free_port, needs_envoy, svid

from proxy_runtime.config import snapshot_to_json
from proxy_runtime.runtime import Ack
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from renderers import default_fleet, render

pytestmark = needs_envoy
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(p.parent.name for p in GOLDEN.glob("*/input"))


def _docs(case: str) -> list[tuple[str, dict[str, Any]]]:
    result = validate(DirectorySource(GOLDEN / case / "input"))
    assert result.ok
    fleet = default_fleet(result.model)
    snaps = render(result.model, fleet).snapshots
    return [(pid, snapshot_to_json(r.snapshot)) for pid, r in sorted(snaps.items())]


def _free_ports(doc: dict[str, Any]) -> dict[str, Any]:
    for li in (doc.get("inbound") or {}).get("listeners", []):
        li["port"], li["bindAddress"] = free_port(), "127.0.0.1"
    if doc.get("outbound"):
        doc["outbound"]["port"], doc["outbound"]["bindAddress"] = free_port(), "127.0.0.1"
    for t in doc.get("tcp", []):
        t["port"], t["bindAddress"] = free_port(), "127.0.0.1"
    return doc


@pytest.mark.parametrize("case", CASES)
def test_envoy_acks_every_golden_snapshot(tmp_path: Path, case: str) -> None:
    docs = _docs(case)
    assert docs

    async def scenario() -> None:
        async with envoy_plane(tmp_path) as dp:
            ident = svid()
            for pid, doc in docs:
                doc = _free_ports(doc)
                doc["identity"] = ident
                result = await dp.apply(doc)
                assert isinstance(result, Ack), f"{case}/{pid}: {result}"

    asyncio.run(scenario())
