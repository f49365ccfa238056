"""The built-in certificate authority.

Two ways to run it:

- **Self-signed** (default): a fresh EC P-256 root is made on first start; it signs the
  controller's serving certificate and every proxy's X.509-SVID. The trust bundle is that
  root.
- **Under the user's root**: given the user's root certificate and key, an intermediate is
  made (pathLen 0) and signs everything; the trust bundle is the user's root. The root key is
  read once to sign the intermediate (and again to re-issue it when it passes half its life)
  and is never copied into the data dir.

Files, in `<data_dir>/ca/` (directory 0700):

- `signing.pem` (0600): the signing certificate (the root or the intermediate) followed by
  its private key. One file, so a single atomic rename replaces both together: a crash
  while re-issuing the intermediate can never leave a key that does not match its cert.
- `bundle.pem` (0644): the trust bundle. Written first; `signing.pem` is written last, so its
  presence means a complete CA.
- `.lock`: held (flock) while loading or creating, so two processes starting at once
  agree on one CA.

Every write is atomic (temp file in the same directory, fsync, rename, fsync the directory).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
)

from reconciler.ca import certs
from reconciler.ca.errors import CAConfigError, CSRRejected, InvalidSpiffeId
from reconciler.ca.files import atomic_write, ensure_private_dir, exclusive_lock
from reconciler.ca.spiffe import parse_spiffe_id, validate_trust_domain
from reconciler.ca.verify import load_pem_chain, verify_svid_chain

DEFAULT_ROOT_TTL = timedelta(days=3650)
DEFAULT_INTERMEDIATE_TTL = timedelta(days=365)
DEFAULT_SVID_TTL = timedelta(hours=24)
DEFAULT_SERVER_TTL = timedelta(days=30)
MIN_TTL = timedelta(minutes=1)
MAX_SVID_TTL = timedelta(days=30)

SIGNING = "signing.pem"
BUNDLE = "bundle.pem"
LOCK = ".lock"

_PRIVATE_KEY_TYPES = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


@dataclass(frozen=True, slots=True)
class ServerCredentials:
    """A serving certificate chain and its private key (PEM), for the controller's listener."""

    cert_chain_pem: bytes
    key_pem: bytes
    not_after: datetime
    renew_at: datetime


def renew_at(cert: x509.Certificate | bytes | str) -> datetime:
    """When to renew: notBefore + half the lifetime (of the first certificate in a PEM chain)."""
    leaf = cert if isinstance(cert, x509.Certificate) else load_pem_chain(cert)[0]
    return certs.lifetime_midpoint(leaf)


class CertificateAuthority:
    """Issues X.509-SVIDs and serving certificates for one trust domain."""

    def __init__(
        self,
        *,
        trust_domain: str,
        signing_cert: x509.Certificate,
        signing_key: CertificateIssuerPrivateKeyTypes,
        bundle: Sequence[x509.Certificate],
    ) -> None:
        self._trust_domain = validate_trust_domain(trust_domain)
        self._signing_cert = signing_cert
        self._signing_key = signing_key
        self._bundle = list(bundle)
        # What a leaf is sent with: the signing cert, unless it is itself a trusted root.
        self._intermediates = [] if signing_cert in self._bundle else [signing_cert]

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        data_dir: str | os.PathLike[str],
        trust_domain: str,
        *,
        now: datetime,
        root_cert_file: str | os.PathLike[str] | None = None,
        root_key_file: str | os.PathLike[str] | None = None,
        root_key_password: bytes | None = None,
        root_ttl: timedelta = DEFAULT_ROOT_TTL,
        intermediate_ttl: timedelta = DEFAULT_INTERMEDIATE_TTL,
    ) -> CertificateAuthority:
        """Load the CA from `<data_dir>/ca`, or create it there on first start.

        With `root_cert_file` and `root_key_file` (which may be the same PEM file), the CA is
        an intermediate under that root (re-issued once it is past half its life). Raises `CAConfigError` when the files are
        incomplete, do not match each other or the trust domain, or have expired.
        """
        validate_trust_domain(trust_domain)
        _require_aware(now)
        if (root_cert_file is None) != (root_key_file is None):
            raise CAConfigError("give both the root certificate and the root key, or neither")
        root = None
        if root_cert_file is not None and root_key_file is not None:
            root = _load_user_root(
                Path(root_cert_file), Path(root_key_file), root_key_password, now
            )
        data = Path(data_dir)
        ensure_private_dir(data)
        ca_dir = data / "ca"
        ensure_private_dir(ca_dir)
        with exclusive_lock(ca_dir / LOCK):
            if not (ca_dir / SIGNING).exists():
                return cls._create(ca_dir, trust_domain, now, root, root_ttl, intermediate_ttl)
            ca = cls._load(ca_dir, trust_domain)
            ca._check_against_root(root)
            if root is not None and now >= renew_at(ca._signing_cert):
                return cls._create(ca_dir, trust_domain, now, root, root_ttl, intermediate_ttl)
            if now >= ca._signing_cert.not_valid_after_utc:
                raise CAConfigError(
                    f"the CA certificate in {ca_dir} expired on "
                    f"{ca._signing_cert.not_valid_after_utc.isoformat()}"
                )
            return ca

    @classmethod
    def _create(
        cls,
        ca_dir: Path,
        trust_domain: str,
        now: datetime,
        root: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None,
        root_ttl: timedelta,
        intermediate_ttl: timedelta,
    ) -> CertificateAuthority:
        key = certs.new_key()
        if root is None:
            cert = certs.make_root(key, trust_domain, now=now, ttl=root_ttl)
            bundle = [cert]
        else:
            root_cert, root_key = root
            cert = certs.make_intermediate(
                key.public_key(),
                trust_domain,
                issuer=root_cert,
                issuer_key=root_key,
                now=now,
                ttl=intermediate_ttl,
            )
            bundle = [root_cert]
        atomic_write(ca_dir / BUNDLE, b"".join(certs.cert_pem(c) for c in bundle), mode=0o644)
        atomic_write(ca_dir / SIGNING, certs.cert_pem(cert) + certs.key_pem(key), mode=0o600)
        return cls(trust_domain=trust_domain, signing_cert=cert, signing_key=key, bundle=bundle)

    @classmethod
    def _load(cls, ca_dir: Path, trust_domain: str) -> CertificateAuthority:
        try:
            signing = (ca_dir / SIGNING).read_bytes()
            cert = x509.load_pem_x509_certificate(signing)
            key = serialization.load_pem_private_key(signing, None)
            bundle = x509.load_pem_x509_certificates((ca_dir / BUNDLE).read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise CAConfigError(f"cannot load the CA from {ca_dir}: {exc}") from exc
        if not isinstance(key, _PRIVATE_KEY_TYPES):
            raise CAConfigError(f"{ca_dir / SIGNING} holds a key type that cannot sign")
        if not _same_public_key(cert, key):
            raise CAConfigError(f"the key in {ca_dir / SIGNING} does not belong to its certificate")
        found = _ca_trust_domain(cert)
        if found != trust_domain:
            raise CAConfigError(
                f"the CA in {ca_dir} is for trust domain {found!r}, not {trust_domain!r}"
            )
        if not any(cert == b or _issued_by(cert, b) for b in bundle):
            raise CAConfigError(f"{SIGNING} does not chain to {BUNDLE} in {ca_dir}")
        return cls(trust_domain=trust_domain, signing_cert=cert, signing_key=key, bundle=bundle)

    def _check_against_root(
        self, root: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None
    ) -> None:
        if root is None:
            return
        if self._bundle != [root[0]]:
            raise CAConfigError(
                "the CA in the data dir was not made under the given root; "
                "move its ca/ directory away to make a new one"
            )

    # -- what it is ------------------------------------------------------------------------

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def signing_certificate(self) -> x509.Certificate:
        return self._signing_cert

    def trust_bundle(self) -> list[x509.Certificate]:
        return list(self._bundle)

    def trust_bundle_pem(self) -> bytes:
        """The root certificate(s) peers must trust, PEM."""
        return b"".join(certs.cert_pem(c) for c in self._bundle)

    def bundle_fingerprint(self) -> str:
        """SHA-256 (hex) of the first bundle certificate's DER: for pinning at bootstrap."""
        der = self._bundle[0].public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()

    # -- issuing ---------------------------------------------------------------------------

    def issue_svid(
        self,
        csr_pem: bytes | str,
        spiffe_id: str,
        *,
        now: datetime,
        ttl: timedelta = DEFAULT_SVID_TTL,
    ) -> bytes:
        """Sign an X.509-SVID for `spiffe_id` over the CSR's public key.

        Returns PEM: the leaf, followed by the intermediate when there is one (what a TLS
        peer must present). The CSR's signature must verify (proof the requester holds the
        key) and its key must be EC P-256/P-384, Ed25519 or RSA >= 2048. Everything else in
        the CSR (subject, requested SANs, extensions) is ignored: the CA alone decides the
        identity. Raises `CSRRejected` or `InvalidSpiffeId`.
        """
        _require_aware(now)
        identity = parse_spiffe_id(spiffe_id)
        if identity.trust_domain != self._trust_domain:
            raise InvalidSpiffeId(
                f"{spiffe_id} is not in this CA's trust domain {self._trust_domain!r}"
            )
        if not identity.path:
            raise InvalidSpiffeId("an SVID needs a workload path, not the bare trust domain")
        _check_ttl(ttl, MAX_SVID_TTL)
        public_key = _csr_public_key(csr_pem)
        leaf = self._sign_leaf(public_key, now=now, ttl=ttl, uri=str(identity))
        return certs.cert_pem(leaf) + b"".join(certs.cert_pem(c) for c in self._intermediates)

    def renew_svid(
        self,
        current_chain: bytes | str | Sequence[x509.Certificate],
        csr_pem: bytes | str,
        *,
        now: datetime,
        ttl: timedelta = DEFAULT_SVID_TTL,
    ) -> bytes:
        """A fresh SVID for the identity the holder of `current_chain` already has.

        For renewal at half-life over the proxy's live stream: no token is needed, because
        the current SVID (still valid at `now`, ours) is the proof. The new key comes from
        the CSR, so the private key never leaves the proxy. Raises `SVIDRejected`,
        `CSRRejected`.
        """
        identity = self.verify_svid(current_chain, now=now)
        return self.issue_svid(csr_pem, identity, now=now, ttl=ttl)

    def check_csr(self, csr_pem: bytes | str) -> None:
        """Raise `CSRRejected` if `issue_svid` would refuse this CSR (before using a token)."""
        _csr_public_key(csr_pem)

    def issue_server_cert(
        self,
        hostnames: Sequence[str] = (),
        ips: Sequence[str | certs.IPAddress] = (),
        *,
        now: datetime,
        ttl: timedelta = DEFAULT_SERVER_TTL,
        spiffe_id: str | None = None,
    ) -> ServerCredentials:
        """A fresh key and serving certificate for the controller's own listeners.

        DNS and IP SANs as given; optionally the controller's SPIFFE ID as its one URI SAN,
        so proxies can check it like any SVID. EKU serverAuth only.
        """
        _require_aware(now)
        addresses = [ipaddress.ip_address(ip) if isinstance(ip, str) else ip for ip in ips]
        if not hostnames and not addresses:
            raise ValueError("a server certificate needs at least one hostname or IP address")
        for name in hostnames:
            if not name or any(c.isspace() for c in name) or "/" in name:
                raise ValueError(f"{name!r} is not a hostname")
        uri = None
        if spiffe_id is not None:
            identity = parse_spiffe_id(spiffe_id)
            if identity.trust_domain != self._trust_domain:
                raise InvalidSpiffeId(f"{spiffe_id} is not in trust domain {self._trust_domain!r}")
            uri = str(identity)
        _check_ttl(ttl, DEFAULT_ROOT_TTL)
        key = certs.new_key()
        leaf = self._sign_leaf(
            key.public_key(),
            now=now,
            ttl=ttl,
            uri=uri,
            dns_names=list(hostnames),
            ips=addresses,
            client_auth=False,
        )
        chain = certs.cert_pem(leaf) + b"".join(certs.cert_pem(c) for c in self._intermediates)
        return ServerCredentials(
            cert_chain_pem=chain,
            key_pem=certs.key_pem(key),
            not_after=leaf.not_valid_after_utc,
            renew_at=certs.lifetime_midpoint(leaf),
        )

    def _sign_leaf(
        self,
        public_key: CertificateIssuerPublicKeyTypes,
        *,
        now: datetime,
        ttl: timedelta,
        uri: str | None,
        dns_names: Sequence[str] = (),
        ips: Sequence[certs.IPAddress] = (),
        client_auth: bool = True,
    ) -> x509.Certificate:
        if now >= self._signing_cert.not_valid_after_utc:
            raise CAConfigError("the CA certificate has expired; it cannot issue")
        return certs.make_leaf(
            public_key,
            issuer=self._signing_cert,
            issuer_key=self._signing_key,
            now=now,
            ttl=ttl,
            uri=uri,
            dns_names=dns_names,
            ips=ips,
            client_auth=client_auth,
        )

    # -- checking --------------------------------------------------------------------------

    def verify_svid(
        self, cert_chain: bytes | str | Sequence[x509.Certificate], *, now: datetime
    ) -> str:
        """The SPIFFE ID of a presented SVID chain (leaf first), or `SVIDRejected`.

        The chain must lead to our trust bundle, be valid at `now`, and the leaf must carry
        exactly one URI SAN: a SPIFFE ID of our trust domain.
        """
        chain = (
            load_pem_chain(cert_chain) if isinstance(cert_chain, bytes | str) else list(cert_chain)
        )
        # A TLS stack may hand over only the peer's leaf (Python's ssl does before 3.13); our
        # own intermediate is known, so offer it as a candidate too.
        candidates = chain + [c for c in self._intermediates if c not in chain]
        identity = verify_svid_chain(
            candidates, bundle=self._bundle, trust_domain=self._trust_domain, now=now
        )
        return str(identity)

    renew_at = staticmethod(renew_at)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _check_ttl(ttl: timedelta, maximum: timedelta) -> None:
    if not MIN_TTL <= ttl <= maximum:
        raise ValueError(f"ttl must be between {MIN_TTL} and {maximum}")


def _csr_public_key(csr_pem: bytes | str) -> CertificateIssuerPublicKeyTypes:
    data = csr_pem.encode("ascii") if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise CSRRejected(f"not a PEM certificate signing request: {exc}") from exc
    try:
        valid = csr.is_signature_valid
    except Exception as exc:  # unsupported signature algorithms raise here
        raise CSRRejected(f"the CSR's signature cannot be checked: {exc}") from exc
    if not valid:
        raise CSRRejected("the CSR's signature does not verify (the requester must hold the key)")
    try:
        public_key = csr.public_key()
    except ValueError as exc:
        raise CSRRejected(f"the CSR's public key cannot be read: {exc}") from exc
    return certs.check_public_key(public_key)


def _load_user_root(
    cert_file: Path, key_file: Path, password: bytes | None, now: datetime
) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password)
    except (OSError, ValueError, TypeError) as exc:
        raise CAConfigError(f"cannot load the root CA: {exc}") from exc
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise CAConfigError(f"{key_file} holds a key type that cannot sign certificates")
    if not _same_public_key(cert, key):
        raise CAConfigError(f"{key_file} is not the key of {cert_file}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CAConfigError(f"{cert_file} is not a CA certificate (basicConstraints cA=true)")
    if constraints.path_length is not None and constraints.path_length < 1:
        raise CAConfigError(f"{cert_file} may not sign an intermediate (pathLen 0)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None  # allowed (RFC 5280); `openssl req -x509` roots have none
    if usage is not None and not usage.key_cert_sign:
        raise CAConfigError(f"{cert_file}'s keyUsage does not allow signing certificates")
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise CAConfigError(
            f"{cert_file} is not valid now (valid until {cert.not_valid_after_utc.isoformat()})"
        )
    return cert, key


def _same_public_key(cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, fmt) == key.public_key().public_bytes(der, fmt)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ca_trust_domain(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            return parse_spiffe_id(uri).trust_domain
        except InvalidSpiffeId:
            continue
    return None
