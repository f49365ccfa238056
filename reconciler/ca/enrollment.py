"""Joining a proxy: a single-use token and a CSR in, an SVID and the trust bundle out.

The steps the bootstrap endpoint and `meshcd proxy token create` run, with the audit
records the issue asks for (token issued, used, refused; SVID issued). The HTTP handler
around `enroll` only parses the request and maps errors to status codes.

Order matters in `enroll`: the CSR is checked *before* the token is redeemed, so a proxy
that sent a broken CSR can retry with the same token; the token is redeemed *before*
anything is signed, so a refused token never yields a certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.audit import AuditEntry, AuditLog
from reconciler.ca.authority import (
    DEFAULT_SVID_TTL,
    MAX_SVID_TTL,
    MIN_TTL,
    CertificateAuthority,
    renew_at,
)
from reconciler.ca.errors import CSRRejected, TokenRefused
from reconciler.ca.spiffe import spiffe_id
from reconciler.ca.tokens import DEFAULT_TOKEN_TTL, IssuedToken, JoinTokens
from reconciler.ca.verify import load_pem_chain


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What a proxy gets back: its certificate chain, whom to trust, when to renew."""

    spiffe_id: str
    svid_chain_pem: bytes
    trust_bundle_pem: bytes
    not_after: datetime
    renew_at: datetime
    token_id: str


def issue_join_token(
    tokens: JoinTokens,
    audit: AuditLog,
    *,
    actor: str,
    service: str,
    namespace: str = "default",
    now: datetime,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
) -> IssuedToken:
    """Create a join token and record `token.issued` (with its id, never the secret)."""
    issued = tokens.create(service, namespace, now=now, ttl=ttl)
    audit.append(
        actor,
        "token.issued",
        f"{namespace}/{service}",
        {
            "token_id": issued.id,
            "service": service,
            "namespace": namespace,
            "expires_at": issued.expires_at.isoformat(),
        },
        now=now,
    )
    return issued


def enroll(
    *,
    ca: CertificateAuthority,
    tokens: JoinTokens,
    audit: AuditLog,
    token: str,
    csr_pem: bytes | str,
    service: str,
    namespace: str = "default",
    peer: str = "",
    now: datetime,
    ttl: timedelta = DEFAULT_SVID_TTL,
) -> Enrollment:
    """Redeem `token` for `namespace/service` and sign the proxy's CSR.

    `peer` (the remote address) goes into the audit. Raises `CSRRejected` (token kept) or
    `TokenRefused` (recorded as `token.refused` with the reason and, when known, the token
    id). On success records `token.used` and `svid.issued`.
    """
    subject = f"{namespace}/{service}"
    actor = f"join:{peer}" if peer else "join"
    if not MIN_TTL <= ttl <= MAX_SVID_TTL:  # checked before the token is spent
        raise ValueError(f"ttl must be between {MIN_TTL} and {MAX_SVID_TTL}")
    try:
        ca.check_csr(csr_pem)
    except CSRRejected as exc:
        audit.append(actor, "svid.refused", subject, {"reason": str(exc), "peer": peer}, now=now)
        raise
    try:
        info = tokens.redeem(token, service, namespace, now=now)
    except TokenRefused as exc:
        audit.append(
            actor,
            "token.refused",
            subject,
            {"reason": exc.reason, "token_id": exc.token_id, "peer": peer},
            now=now,
        )
        raise
    identity = spiffe_id(ca.trust_domain, namespace, service)
    chain = ca.issue_svid(csr_pem, identity, now=now, ttl=ttl)
    leaf = load_pem_chain(chain)[0]
    issued = {
        "token_id": info.id,
        "serial": format(leaf.serial_number, "x"),
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "peer": peer,
    }
    audit.append_many(
        [
            AuditEntry(actor, "token.used", subject, {"token_id": info.id, "peer": peer}),
            AuditEntry(actor, "svid.issued", identity, issued),
        ],
        now=now,
    )
    return Enrollment(
        spiffe_id=identity,
        svid_chain_pem=chain,
        trust_bundle_pem=ca.trust_bundle_pem(),
        not_after=leaf.not_valid_after_utc,
        renew_at=renew_at(leaf),
        token_id=info.id,
    )
