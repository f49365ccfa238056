"""Checking that a presented certificate chain is an X.509-SVID of our trust domain.

Pure: certificates in, SPIFFE ID or `SVIDRejected` out; the time is passed in. Used by the
fleet listener (after the TLS handshake, on the peer's chain) and the bootstrap endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from reconciler.ca.errors import InvalidSpiffeId, SVIDRejected
from reconciler.ca.spiffe import SpiffeId, parse_spiffe_id

# leaf + intermediate + root is what this CA makes; allow one more for a user's hierarchy.
MAX_CHAIN_DEPTH = 4


def load_pem_chain(pem: bytes | str) -> list[x509.Certificate]:
    """All certificates in a PEM blob, in order. Raises `SVIDRejected` if there are none."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise SVIDRejected(f"not a PEM certificate chain: {exc}") from exc
    if not certs:
        raise SVIDRejected("no certificate presented")
    return certs


def verify_svid_chain(
    chain: Sequence[x509.Certificate],
    *,
    bundle: Sequence[x509.Certificate],
    trust_domain: str,
    now: datetime,
) -> SpiffeId:
    """Verify `chain` (leaf first, then intermediates) against the trust `bundle` at `now`.

    Checks: the chain leads to a bundle certificate with valid signatures, every certificate
    is within its validity period at `now`, the leaf is not a CA and may be used for client
    auth, and it carries exactly one URI SAN which is a SPIFFE ID of `trust_domain`.
    Returns that SPIFFE ID.
    """
    if not chain:
        raise SVIDRejected("no certificate presented")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    leaf, intermediates = chain[0], list(chain[1:])
    _check_leaf_shape(leaf)
    verifier = (
        PolicyBuilder()
        .store(Store(list(bundle)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=ExtensionPolicy.webpki_defaults_ee())
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise SVIDRejected(f"certificate chain does not verify: {exc}") from exc
    identity = _single_spiffe_id(leaf)
    if identity.trust_domain != trust_domain:
        raise SVIDRejected(
            f"SPIFFE ID {identity} belongs to trust domain {identity.trust_domain!r}, "
            f"not {trust_domain!r}"
        )
    return identity


def _ca_key_usage(_policy: Policy, _cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("a CA certificate's keyUsage must allow keyCertSign")


# The Web PKI profile, except that a CA certificate may omit keyUsage: roots made with
# `openssl req -x509` do, RFC 5280 allows it, and OpenSSL (which does the TLS handshakes)
# accepts them. When keyUsage is present it must allow certificate signing.
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage
)


def _check_leaf_shape(leaf: x509.Certificate) -> None:
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise SVIDRejected("the leaf is a CA certificate (cA=true), not an SVID")


def _single_spiffe_id(leaf: x509.Certificate) -> SpiffeId:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise SVIDRejected("the certificate has no subject alternative names") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise SVIDRejected(f"an SVID has exactly one URI SAN; this one has {len(uris)}")
    try:
        return parse_spiffe_id(uris[0])
    except InvalidSpiffeId as exc:
        raise SVIDRejected(f"the URI SAN is not a valid SPIFFE ID: {exc}") from exc
