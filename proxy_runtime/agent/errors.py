"""What the agent raises. Each error says whether a retry can help (`temporary`).

    AgentError
    ├── IdentityError        permanent: state-dir certificate/key missing, unreadable or mismatched
    └── BootstrapError       temporary: the bootstrap endpoint is unreachable or failed (5xx)
        ├── BootstrapRefused permanent: the token was refused (403; `reason` says why) or the
        │                    request was bad (4xx)
        └── TrustError       permanent: the CA fingerprint pin does not match, or the bundle
                             is not usable
"""

from __future__ import annotations

from proxy_runtime.errors import ProxyRuntimeError


class AgentError(ProxyRuntimeError):
    """Base of the agent's errors."""


class IdentityError(AgentError):
    """The proxy's certificate, key or bundle in the state dir cannot be used."""


class BootstrapError(AgentError):
    temporary = True


class BootstrapRefused(BootstrapError):
    temporary = False

    def __init__(self, message: str, reason: str | None = None, status: int = 403) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class TrustError(BootstrapError):
    temporary = False
