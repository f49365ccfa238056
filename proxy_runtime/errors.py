"""The managed proxy's one exception tree.

`proxy_runtime` ships on proxy hosts without the controller, so it may not import
`reconciler`; it keeps its own root, with the same one flag the controller's `MeshcdError`
has: `temporary`, whether retrying may help.

    ProxyRuntimeError                temporary: may retrying help?
    ├── SnapshotError                a snapshot that must not be applied   (config.errors)
    ├── ProtocolError                a frame that is not a fleet message   (protocol.fleet)
    ├── AgentError                   the agent                             (agent.errors)
    │   ├── IdentityError            state-dir certificate/key unusable
    │   └── BootstrapError           temporary: bootstrap endpoint unreachable or failed
    │       ├── BootstrapRefused     the token or the request was refused
    │       └── TrustError           the CA pin does not match, or the bundle is unusable
    ├── UpstreamError                temporary: connect failure, reset, timeout  (dataplane.upstream)
    ├── Overflow                     temporary: a circuit-breaker limit was hit  (dataplane.upstream)
    ├── HeadersTooLarge              a request head over the limit         (dataplane.downstream)
    ├── BadFraming                   a request the parser refuses (400/501)  (dataplane.downstream)
    └── PathError                    a request target that cannot be normalized (config.paths)
"""

from __future__ import annotations

from typing import ClassVar


class ProxyRuntimeError(Exception):
    """Root of every error the proxy runtime raises on purpose."""

    temporary: ClassVar[bool] = False
