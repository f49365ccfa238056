"""Ports for tests: every test takes its own, so tests run beside `make demo`, beside each
other (pytest-xdist) and beside anything else on the machine.

A port is picked by binding port 0 (the kernel's choice among free ephemeral ports) and checked
free on 127.0.0.1; ports this process handed out are not handed out again. A group of ports at
fixed offsets (a static proxy and its app 1000 above; a run of outbound ports, one per static
proxy, from the Mesh's `outboundPortBase`) is checked port by port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable, Iterator

_lock = threading.Lock()
_handed_out: set[int] = set()


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `host:port` can be bound now (TCP)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_group(offsets: Iterable[int]) -> int:
    """A port P such that P + each offset is free now and not handed out before here."""
    offs = tuple(offsets)
    with _lock:
        for _ in range(500):
            p = _kernel_port()
            if p + max(offs) > 65535 or p + min(offs) < 1024:
                continue
            group = [p + o for o in offs]
            if all(q not in _handed_out and bindable(q) for q in group):
                _handed_out.update(group)
                return p
    raise RuntimeError(f"no free group of ports at offsets {offs}")


def free_port() -> int:
    """One free port."""
    return free_port_group((0,))


def free_static_port() -> int:
    """A static endpoint's port P: P (the proxy) and P + 1000 (the app behind it) free."""
    return free_port_group((0, 1000))


def free_port_range(n: int) -> int:
    """The first of `n` consecutive free ports (a Mesh's `outboundPortBase` for n proxies)."""
    return free_port_group(range(max(1, n)))


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port where a connection is refused for as long as the block runs: bound here and never
    listened on, so nothing else can take it (unlike a fixed "nothing listens there" port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
