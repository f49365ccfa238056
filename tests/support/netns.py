"""Run a command in a network namespace of its own (like a pod): its 127.0.0.1 and every port
on it are its own, so a test can run something whose fixed ports are the point (the example
repo's proxies on 9101-9142 and 20000+) beside `make demo` or another test using the same ones.

`unshare --net` (util-linux) makes the namespace; as root it needs nothing else, otherwise a
user namespace (`--map-root-user`) when the kernel allows it. The command sees only a
loopback interface, which is brought up first. Everything it starts (children, git hooks)
inherits the namespace and dies with it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

# sh brings lo up, then becomes the command ("$@"), so signals reach it directly.
_UP = 'ip link set lo up && exec "$@"'


def _prefix(root: bool) -> list[str]:
    return ["unshare", "--net", *([] if root else ["--map-root-user"]), "--",
            "sh", "-c", _UP, "netns"]


@functools.cache
def netns_prefix() -> list[str] | None:
    """The argv prefix that runs a command in a new network namespace, or None when this
    machine cannot (no unshare/ip, or namespaces not permitted): tried once, for real."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    prefix = _prefix(os.geteuid() == 0)
    probe = [*prefix, "sh", "-c", "ip -o link show lo | grep -q UP"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if done.returncode == 0 else None


def in_netns(argv: list[str]) -> list[str]:
    """`argv` run in a network namespace of its own; raises RuntimeError if this machine
    cannot make one (the caller decides whether to skip)."""
    prefix = netns_prefix()
    if prefix is None:
        raise RuntimeError("cannot create a network namespace here (needs util-linux unshare, "
                           "iproute2, and root or unprivileged user namespaces)")
    return [*prefix, *argv]
