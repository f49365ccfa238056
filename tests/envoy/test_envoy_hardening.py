"""Path normalization and framing are Envoy's: the bypasses found on the builtin proxy do not
get past a DENY on /admin*, and a short body answered early poisons nothing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from envoy_harness import (
    Backend,
    envoy_plane,
    free_port,
    http,
    inbound_doc,
    needs_envoy,
    status_of,
    wait_status,
)

from proxy_runtime.runtime import Ack

pytestmark = needs_envoy

BYPASSES = ["//admin", "/./admin", "/%61dmin", "/x/../admin", "/%2e/admin", "/admin/",
            "/x/..//admin", "/%2E%2E/admin"]


def test_deny_on_admin_holds_against_path_tricks_and_absolute_form(
        tmp_path: Path, backend: Backend) -> None:
    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port,
                                                         deny_paths=("/admin*",))), Ack)
            await wait_status(port, 200, "/public")
            for path in BYPASSES:
                raw = f"GET {path} HTTP/1.1\r\nHost: web\r\n\r\n".encode()
                got = await asyncio.to_thread(http, port, raw)
                assert status_of(got) in (400, 403), (path, got[:80])
            raw = b"GET http://web/admin HTTP/1.1\r\nHost: web\r\n\r\n"
            assert status_of(await asyncio.to_thread(http, port, raw)) in (400, 403)
            assert not [p for _, p, _ in backend.seen if "admin" in p.lower()
                        or "%61" in p or "%2e" in p.lower()], backend.seen

    asyncio.run(scenario())


def test_a_short_body_answered_early_does_not_poison_a_pooled_upstream(
        tmp_path: Path, backend: Backend) -> None:
    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port,
                                                         deny_paths=("/admin*",))), Ack)
            await wait_status(port, 200, "/warm")  # a pooled upstream connection exists
            smuggled = b"GET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n"

            def attacker() -> bytes:
                with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                    s.sendall(b"POST /admin HTTP/1.1\r\nHost: web\r\nContent-Length: 200\r\n\r\n"
                              b"short")
                    first = s.recv(65536)
                    try:  # the rest of the "body" is a request of its own
                        s.sendall(smuggled)
                        rest = s.recv(65536)
                    except OSError:
                        rest = b""
                    return first + rest

            got = await asyncio.to_thread(attacker)
            assert status_of(got) == 403
            for i in range(5):  # other clients on the same upstream pool
                raw = f"GET /victim{i} HTTP/1.1\r\nHost: web\r\n\r\n".encode()
                resp = await asyncio.to_thread(http, port, raw)
                assert status_of(resp) == 200 and f"/victim{i}".encode() in resp
            paths = [p for _, p, _ in backend.seen]
            assert "/smuggled" not in paths and "/admin" not in paths, paths

    asyncio.run(scenario())


@pytest.mark.parametrize("framing", [
    b"POST /x HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
])
def test_ambiguous_framing_is_refused(tmp_path: Path, backend: Backend, framing: bytes) -> None:
    async def scenario() -> None:
        port = free_port()
        async with envoy_plane(tmp_path) as dp:
            assert isinstance(await dp.apply(inbound_doc(port, backend.port)), Ack)
            await wait_status(port, 200)
            assert status_of(await asyncio.to_thread(http, port, framing)) == 400
            assert [p for _, p, _ in backend.seen if p == "/x"] == []

    asyncio.run(scenario())
