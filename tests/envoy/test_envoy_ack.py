"""A real Envoy driven over ADS by the agent: ACK, NACK with Envoy's reason while the old
config keeps serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

from envoy_harness import Backend, envoy_plane, free_port, inbound_doc, needs_envoy, wait_status

from proxy_runtime.runtime import Ack

pytestmark = needs_envoy


def test_snapshot_is_acked_once_envoy_acked_every_type_and_then_serves(
        tmp_path: Path, backend: Backend) -> None:
    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            result = await dp.apply(inbound_doc(port, backend.port))
            assert isinstance(result, Ack), result
            await wait_status(port, 200, "/hello", within=3.0)
            assert ("GET", "/hello", b"") in backend.seen

    asyncio.run(scenario())
