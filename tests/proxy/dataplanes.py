"""The data planes the conformance suites run on, behind one small interface (`Plane`):

- `builtin`: the Python proxy (`ProxyRuntime`) in the test's own event loop;
- `envoy`: a real Envoy driven over ADS/SDS by the agent's `EnvoyDataPlane`. Envoy is slow to
  start, so one Envoy serves a whole test module (`EnvoyHost`, module-scoped): the agent runs
  on its own event loop in a background thread and each test feeds it new snapshots.

Snapshots name listener port 0 as for the builtin proxy; for Envoy each (role, port 0) gets a
port picked free at run time, kept for the plane's life so a re-apply keeps serving there.
Envoy's answer counts as applied once no listener is warming and every listener accepts."""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from proxy_runtime.runtime import Ack, Nack, ProxyRuntime

DATAPLANES = ["builtin", "envoy"]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envoy_binary() -> Path | None:
    try:
        from proxy_runtime.envoy.binary import find_envoy
    except ImportError:  # the envoy extra is not installed
        return None
    return find_envoy()


class EnvoyHost:
    """One real Envoy and its agent-side data plane, the agent on a loop in a thread."""

    def __init__(self, tmp: Path) -> None:
        from proxy_runtime.envoy.dataplane import EnvoyDataPlane

        binary = envoy_binary()
        assert binary is not None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        (tmp / "state").mkdir(parents=True, exist_ok=True)
        self.dp = EnvoyDataPlane(tmp / "state", proxy_id="conf-1", service="cart.shop",
                                 binary=binary, run_dir=tmp / "run", concurrency=1,
                                 ack_timeout=10.0, drain_seconds=0.5)
        self.call(self.dp.start())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def admin(self, path: str) -> Any:
        port = self.dp.supervisor.admin_port
        assert port is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def settled(self, ports: list[int]) -> bool:
        """No listener warming, each of `ports` accepts a connection."""
        dump = self.admin("/config_dump?resource=dynamic_listeners")
        if any("warming_state" in li for li in dump.get("configs", [])):
            return False
        for p in ports:
            try:
                socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
            except OSError:
                return False
        return True

    def close(self) -> None:
        async def stop() -> None:
            await self.dp.supervisor.stop()
            if self.dp._server is not None:
                await self.dp._server.stop(0)

        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()


class Plane:
    """A data plane as a test sees it: apply a snapshot document, find a listener's port."""

    name = ""

    async def apply(self, doc: dict[str, Any]) -> Ack | Nack:
        raise NotImplementedError

    def port(self, role: str, configured: int = 0) -> int:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


class BuiltinPlane(Plane):
    name = "builtin"

    def __init__(self, **kw: Any) -> None:
        self.rt = ProxyRuntime(asyncio.get_running_loop(), **kw)

    async def apply(self, doc: dict[str, Any]) -> Ack | Nack:
        return await self.rt.apply(doc)

    def port(self, role: str, configured: int = 0) -> int:
        p = self.rt.port_of(role, configured)
        assert p, (role, configured)
        return p

    async def aclose(self) -> None:
        await self.rt.aclose()


class EnvoyPlane(Plane):
    name = "envoy"

    def __init__(self, host: EnvoyHost) -> None:
        self.host = host
        self.ports: dict[tuple[str, int], int] = {}

    def _pick(self, role: str, configured: int) -> int:
        if configured:
            return configured
        return self.ports.setdefault((role, configured), free_port())

    def _rewrite(self, doc: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        doc = copy.deepcopy(doc)
        doc.pop("version", None)
        ports: list[int] = []
        if doc.get("outbound"):
            doc["outbound"]["port"] = self._pick("outbound", doc["outbound"]["port"])
            ports.append(doc["outbound"]["port"])
        for li in (doc.get("inbound") or {}).get("listeners", []):
            role = "inbound-tcp" if li.get("protocol") == "tcp" else "inbound-http"
            li["port"] = self._pick(role, li["port"])
            ports.append(li["port"])
        for t in doc.get("tcp") or []:
            t["port"] = self._pick("tcp-out", t["port"])
            ports.append(t["port"])
        return doc, ports

    async def apply(self, doc: dict[str, Any]) -> Ack | Nack:
        doc, ports = self._rewrite(doc)
        res = await self.host.acall(self.host.dp.apply(doc))
        if isinstance(res, Ack):
            deadline = time.monotonic() + 5
            while not await asyncio.to_thread(self.host.settled, ports):
                assert time.monotonic() < deadline, f"Envoy's listeners {ports} did not settle"
                await asyncio.sleep(0.02)
        return res

    def port(self, role: str, configured: int = 0) -> int:
        if configured:
            return configured
        return self.ports[(role, configured)]


@pytest.fixture(scope="module")
def envoy_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyHost]:
    if envoy_binary() is None:
        pytest.skip("no envoy binary (install meshcd[envoy] or set MESHCD_ENVOY)")
    host = EnvoyHost(tmp_path_factory.mktemp("envoy"))
    yield host
    host.close()


class PlaneFactory:
    """`await make(**builtin_kwargs)` gives a fresh Plane of the test's data plane."""

    def __init__(self, name: str, host: EnvoyHost | None) -> None:
        self.name = name
        self.host = host

    async def __call__(self, **kw: Any) -> Plane:
        if self.host is None:
            return BuiltinPlane(**kw)
        return EnvoyPlane(self.host)


@pytest.fixture(params=DATAPLANES)
def dataplane(request: pytest.FixtureRequest) -> PlaneFactory:
    if request.param == "envoy" and envoy_binary() is None:
        pytest.skip("no envoy binary (install meshcd[envoy] or set MESHCD_ENVOY)")
    host = request.getfixturevalue("envoy_host") if request.param == "envoy" else None
    return PlaneFactory(request.param, host)
