"""Clusters at run time: endpoints with their health, the balancer, and the connection
pools. Pools and endpoint state live in a registry that outlives one config, so a config
swap that leaves a cluster alone keeps its warm connections and its outlier history."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING

from proxy_runtime.dataplane.balancer import Balancer, EndpointState, OutlierPolicy
from proxy_runtime.dataplane.upstream import UpstreamPool

if TYPE_CHECKING:
    from proxy_runtime.config import Cluster
    from proxy_runtime.metrics import Stats


def split_address(address: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class ClusterRuntime:
    __slots__ = ("balancer", "endpoints", "hash_key", "model", "name", "outlier", "pools", "single_pool",
                 "stats")

    def __init__(self, model: Cluster, registry: PoolRegistry, client_tls: ssl.SSLContext | None,
                 stats: Stats) -> None:
        self.model = model
        self.name = model.name
        self.stats = stats
        self.endpoints: list[EndpointState] = []
        self.pools: dict[tuple[str, int], UpstreamPool] = {}
        tls = model.tls if model.tls is not None and model.tls.mode == "MUTUAL" else None
        ctx = client_tls if tls is not None else None
        peer_ids = tls.peer_spiffe_ids if tls is not None else ()
        sni = tls.sni if tls is not None else None
        cp = model.connection_pool
        for ep in model.endpoints:
            host, port = split_address(ep.address)
            state = registry.endpoint(model.name, host, port)
            state.weight = ep.weight
            self.endpoints.append(state)
            state.pool = self.pools[(host, port)] = registry.pool(
                model.name, host, port, ctx, sni, peer_ids,
                (cp.max_connections, cp.max_pending_requests, cp.max_requests_per_connection,
                 cp.connect_timeout_ms),
            )
        # the pool of a one-endpoint cluster (the common case), without a lookup
        self.single_pool = self.pool(self.endpoints[0]) if len(self.endpoints) == 1 else None
        self.balancer = Balancer(self.endpoints, model.lb_policy)
        od = model.outlier_detection
        self.outlier = (
            OutlierPolicy(od.consecutive_5xx, od.base_ejection_time_ms / 1000.0, int(od.max_ejection_percent))
            if od is not None else None
        )
        self.hash_key = model.hash_key

    def pool(self, endpoint: EndpointState) -> UpstreamPool:
        return self.pools[(endpoint.address, endpoint.port)]


class PoolRegistry:
    def __init__(self, loop: asyncio.AbstractEventLoop, stats: Stats) -> None:
        self.loop = loop
        self.stats = stats
        self._pools: dict[tuple[object, ...], UpstreamPool] = {}
        self._endpoints: dict[tuple[str, str, int], EndpointState] = {}
        self._used: set[tuple[object, ...]] = set()
        self._used_eps: set[tuple[str, str, int]] = set()

    def begin(self) -> None:
        """Start building a config: track which pools and endpoints it uses."""
        self._used = set()
        self._used_eps = set()

    def endpoint(self, cluster: str, host: str, port: int) -> EndpointState:
        key = (cluster, host, port)
        self._used_eps.add(key)
        state = self._endpoints.get(key)
        if state is None:
            state = self._endpoints[key] = EndpointState(host, port)
        return state

    def pool(self, cluster: str, host: str, port: int, ctx: ssl.SSLContext | None,
             sni: str | None, peer_ids: tuple[str, ...],
             limits: tuple[int, int, int, int]) -> UpstreamPool:
        key = (cluster, host, port, id(ctx) if ctx is not None else None, sni, peer_ids, limits)
        self._used.add(key)
        pool = self._pools.get(key)
        if pool is None:
            stats = self.stats
            loop = self.loop
            pool = UpstreamPool(
                loop, host, port,
                ssl_context=ctx, server_hostname=sni or host, expected_peer_ids=peer_ids,
                max_connections=limits[0], max_pending_requests=limits[1],
                max_requests_per_connection=limits[2], connect_timeout=limits[3] / 1000.0,
                on_connect=lambda: stats.connection_opened(cluster),
                on_connect_failure=lambda: stats.connect_failed(cluster, time.time()),
            )
            self._pools[key] = pool
        return pool

    def commit(self) -> None:
        """The new config is live: retire pools it does not use (idle connections close now,
        busy ones when their exchange ends)."""
        for key in list(self._pools):
            if key not in self._used:
                self._pools.pop(key).retire()
        for ekey in list(self._endpoints):
            if ekey not in self._used_eps:
                del self._endpoints[ekey]

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
