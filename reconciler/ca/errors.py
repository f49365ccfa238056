"""What the CA and the join tokens raise. Each error says whether a retry can help.

    CAError
    ├── CAConfigError        permanent: CA files missing, unreadable, mismatched or expired
    ├── InvalidSpiffeId      permanent: not a SPIFFE ID, or not one of our trust domain
    ├── CSRRejected          permanent: unparseable CSR, bad signature, weak or unknown key
    ├── SVIDRejected         permanent: a presented certificate chain does not verify
    └── TokenError
        ├── TokenRefused     permanent: unknown, expired, used, revoked or wrong service
        └── TokenNotFound    permanent: no token with that id (revoke)

Database trouble while using join tokens comes out as `reconciler.store.StoreUnavailable`
(temporary).
"""

from __future__ import annotations

from typing import Literal

from reconciler.errors import MeshcdError, NotFound


class CAError(MeshcdError):
    """Base of the CA's errors. `temporary` is True when a retry may succeed."""


class CAConfigError(CAError):
    """The CA cannot be loaded or created as asked."""


class InvalidSpiffeId(CAError, ValueError):
    """A string that is not a valid SPIFFE ID (or names another trust domain)."""


class CSRRejected(CAError):
    """A certificate signing request the CA will not sign."""


class SVIDRejected(CAError):
    """A certificate chain that is not a valid X.509-SVID of our trust domain."""


class TokenError(CAError):
    """Base of join-token errors."""


RefusalReason = Literal["unknown", "expired", "used", "revoked", "wrong_service"]


class TokenRefused(TokenError):
    """A join token that cannot be redeemed. `reason` is one of `RefusalReason`.

    `token_id` is set when the token exists (so the refusal can be audited by id); it is
    None for an unknown token.
    """

    def __init__(self, reason: RefusalReason, token_id: str | None = None) -> None:
        super().__init__(f"join token refused: {reason.replace('_', ' ')}")
        self.reason: RefusalReason = reason
        self.token_id = token_id


class TokenNotFound(TokenError, NotFound):
    def __init__(self, token_id: str) -> None:
        super().__init__(f"no join token with id {token_id!r}")
        self.token_id = token_id
