"""`GuardedListener` on real sockets (reconciler.net.listener): caps close a connection at
once, a closed connection frees its place, a request head that does not come in time ends
the connection, and the accept loop resumes after running out of descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from pathlib import Path

from reconciler.net.limits import ListenerLimits
from reconciler.net.listener import GuardedListener

Held = list[socket.socket]


def _listen() -> socket.socket:
    s = socket.create_server(("127.0.0.1", 0), backlog=512)
    s.setblocking(False)
    return s


async def _closed_soon(c: socket.socket, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    c.setblocking(False)
    try:
        data = await asyncio.wait_for(loop.sock_recv(c, 1), timeout)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return data == b""


def test_caps_refuse_and_a_closed_connection_frees_its_place() -> None:
    async def main() -> None:
        lst = GuardedListener("t", _listen(), ListenerLimits(max_connections=5,
                                                             max_per_address=3),
                              sweep_s=0.05)
        server_side: Held = []
        lst.start(lambda s, _peer: server_side.append(s))
        port = lst.sock.getsockname()[1]
        loop = asyncio.get_running_loop()

        async def connect(host: str) -> socket.socket:
            c = socket.socket()
            c.bind((host, 0))
            c.setblocking(False)
            await loop.sock_connect(c, ("127.0.0.1", port))
            return c

        ones = [await connect("127.0.0.1") for _ in range(4)]
        twos = [await connect("127.0.0.2") for _ in range(3)]
        await asyncio.sleep(0.2)
        assert len(server_side) == 5 and lst.refused == {"max_per_address": 1,
                                                         "max_connections": 1}
        assert await _closed_soon(ones[3], 1.0) and await _closed_soon(twos[2], 1.0)
        assert not await _closed_soon(ones[0], 0.2)
        server_side[0].close()  # the owner (a transport) closes one: its place is free again
        again = await connect("127.0.0.3")
        await asyncio.sleep(0.2)
        assert len(server_side) == 6 and not await _closed_soon(again, 0.2)
        assert lst.status()["open"] == 5
        await lst.stop()
        for s in [*ones, *twos, again, *server_side, lst.sock]:
            s.close()

    asyncio.run(main())


def test_a_request_head_not_sent_in_time_ends_the_connection() -> None:
    async def main() -> None:
        lst = GuardedListener("t", _listen(), ListenerLimits(header_timeout_s=0.3),
                              sweep_s=0.05)
        lst.start(lambda s, _peer: None)  # nobody reads: as a stuck HTTP parser would
        loop = asyncio.get_running_loop()
        c = socket.socket()
        c.setblocking(False)
        await loop.sock_connect(c, lst.sock.getsockname())
        busy = socket.socket()
        busy.setblocking(False)
        await loop.sock_connect(busy, lst.sock.getsockname())
        await asyncio.sleep(0.05)
        lst.request_started(busy.getsockname())  # a request in flight is never timed out
        assert await _closed_soon(c, 2.0)
        assert not await _closed_soon(busy, 0.6)
        assert lst.timed_out == 1
        await lst.stop()
        for s in (c, busy, lst.sock):
            s.close()

    asyncio.run(main())


def test_accept_loop_resumes_after_descriptors_run_out() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def main() -> None:
        lst = GuardedListener("t", _listen(), ListenerLimits(0, 0))
        accepted: Held = []
        lst.start(lambda s, _peer: accepted.append(s))
        loop = asyncio.get_running_loop()
        clients: Held = []
        used = len(list(Path("/proc/self/fd").iterdir()))
        # each connection costs two descriptors here (client and accepted side)
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 41, hard))
        try:
            with contextlib.suppress(OSError):
                for _ in range(60):
                    c = socket.socket()
                    clients.append(c)
                    c.setblocking(False)
                    await loop.sock_connect(c, lst.sock.getsockname())
            for _ in range(50):
                if not lst.accepting:
                    break
                await asyncio.sleep(0.05)
            assert not lst.accepting and lst.problem() is not None
            assert "EMFILE" in lst.accept_errors
            for s in accepted:
                s.close()
            n = len(accepted)
            late = socket.socket()  # a connection that waits for the loop to resume
            clients.append(late)
            late.setblocking(False)
            await loop.sock_connect(late, lst.sock.getsockname())
            # descriptors are back: the loop accepts the waiting connections again (it may run
            # out once more while the backlog is longer than what was freed)
            for _ in range(100):
                if len(accepted) > n:
                    break
                await asyncio.sleep(0.05)
            assert len(accepted) > n
            for s in [*clients, *accepted]:  # the flood ends: it stays accepting
                s.close()
            for _ in range(100):
                if lst.accepting and lst.problem() is None:
                    break
                await asyncio.sleep(0.05)
            assert lst.accepting and lst.problem() is None
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await lst.stop()
            for s in [*clients, *accepted, lst.sock]:
                s.close()

    asyncio.run(main())
