"""The built-in CA: X.509-SVIDs for proxies, the controller's serving certificate, join tokens.

ca = CertificateAuthority.load_or_create(data_dir, "mesh.local", now=now)
chain_pem = ca.issue_svid(csr_pem, spiffe_id("mesh.local", "shop", "web"), now=now)
ca.verify_svid(peer_chain, now=now)          # -> "spiffe://mesh.local/ns/shop/sa/web"
renew_at(chain_pem)                          # notBefore + half the lifetime

tokens = JoinTokens(engine)                  # same database as the audit trail
issued = tokens.create("web", "shop", now=now)   # issued.token: show once
tokens.redeem(issued.token, "web", "shop", now=now)  # once; then TokenRefused("used")
"""

from __future__ import annotations

from reconciler.ca.authority import (
    DEFAULT_SERVER_TTL,
    DEFAULT_SVID_TTL,
    CertificateAuthority,
    ServerCredentials,
    renew_at,
)
from reconciler.ca.enrollment import Enrollment, enroll, issue_join_token
from reconciler.ca.errors import (
    CAConfigError,
    CAError,
    CSRRejected,
    InvalidSpiffeId,
    RefusalReason,
    SVIDRejected,
    TokenError,
    TokenNotFound,
    TokenRefused,
)
from reconciler.ca.spiffe import SpiffeId, parse_spiffe_id, spiffe_id, validate_trust_domain
from reconciler.ca.tokens import DEFAULT_TOKEN_TTL, IssuedToken, JoinTokens, TokenInfo
from reconciler.ca.verify import load_pem_chain, verify_svid_chain

__all__ = [
    "DEFAULT_SERVER_TTL",
    "DEFAULT_SVID_TTL",
    "DEFAULT_TOKEN_TTL",
    "CAConfigError",
    "CAError",
    "CSRRejected",
    "CertificateAuthority",
    "Enrollment",
    "InvalidSpiffeId",
    "IssuedToken",
    "JoinTokens",
    "RefusalReason",
    "SVIDRejected",
    "ServerCredentials",
    "SpiffeId",
    "TokenError",
    "TokenInfo",
    "TokenNotFound",
    "TokenRefused",
    "enroll",
    "issue_join_token",
    "load_pem_chain",
    "parse_spiffe_id",
    "renew_at",
    "spiffe_id",
    "validate_trust_domain",
    "verify_svid_chain",
]
