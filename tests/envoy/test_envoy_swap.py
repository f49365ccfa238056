"""A config swap under load loses no request: routes move from cluster a to cluster b and a
goes away; b is in before the routes name it, a leaves only after (make before break)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from envoy_harness import Backend, envoy_plane, free_port, http, needs_envoy, status_of, wait_status

from proxy_runtime.config import model as pc
from proxy_runtime.config import snapshot_to_json
from proxy_runtime.runtime import Ack

pytestmark = needs_envoy


def _doc(out_port: int, cluster: str, port: int) -> dict[str, Any]:
    return snapshot_to_json(pc.Snapshot(
        outbound=pc.Outbound(port=out_port, virtual_hosts=(pc.VirtualHost(
            name="api", domains=("api",), routes=(pc.Route(
                clusters=(pc.WeightedCluster(cluster),)),)),)),
        clusters=(pc.Cluster(name=cluster, endpoints=(pc.Endpoint(f"127.0.0.1:{port}"),)),)))


def test_moving_routes_to_a_new_cluster_and_dropping_the_old_loses_no_request(
        tmp_path: Path, backend: Backend) -> None:
    other = Backend()

    async def scenario() -> None:
        out_port = free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(_doc(out_port, "a", backend.port)), Ack)
            await wait_status(out_port, 200, host="api")
            statuses: list[int] = []
            stop = threading.Event()

            def load() -> None:
                raw = b"GET /x HTTP/1.1\r\nHost: api\r\n\r\n"
                while not stop.is_set():
                    statuses.append(status_of(http(out_port, raw, 2.0)))

            workers = [threading.Thread(target=load) for _ in range(4)]
            for w in workers:
                w.start()
            try:
                for i in range(6):  # back and forth: a -> b -> a ... each drops the other
                    name, port = ("b", other.port) if i % 2 == 0 else ("a", backend.port)
                    assert isinstance(await dp.apply(_doc(out_port, name, port)), Ack)
                    await asyncio.sleep(0.15)
            finally:
                stop.set()
                for w in workers:
                    await asyncio.to_thread(w.join)
            bad = [s for s in statuses if s != 200]
            assert len(statuses) > 50 and not bad, (len(statuses), bad[:10])

    try:
        asyncio.run(scenario())
    finally:
        other.close()
