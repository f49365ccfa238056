"""The one error type of the config API: what is wrong, and where (a JSON path)."""

from __future__ import annotations

from proxy_runtime.errors import ProxyRuntimeError


class SnapshotError(ProxyRuntimeError, ValueError):
    """A snapshot that must not be applied.

    `path` is a JSON path in the snapshot, e.g. `outbound.virtualHosts[2].routes[0].match.path.regex`
    ("" for the whole document); `message` says what is wrong there. str(error) is
    "<path>: <message>", the text a proxy sends back in a NACK.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)
