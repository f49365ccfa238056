"""The proxy's own identity in its state dir: key (made here, never sent), SVID chain, trust
bundle; and the agent's small state file (proxy id, fleet URL, config version, newest epoch).

Files: `svid.key` (0600), `svid.pem`, `bundle.pem`, `agent.json`. Every write is atomic
(temp file, fsync, rename), so a crash leaves the old or the new file, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy_runtime.agent.errors import IdentityError, TrustError

KEY_FILE = "svid.key"
CERT_FILE = "svid.pem"
BUNDLE_FILE = "bundle.pem"
STATE_FILE = "agent.json"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> str:
    """A CSR over `key`. The CA ignores its subject; the name only helps a human reading it."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def parse_fingerprint(text: str) -> str:
    """`sha256:<64 hex>` (colons and case ignored) -> 64 lowercase hex digits."""
    value = text.strip().lower()
    if value.startswith("sha256:"):
        value = value[len("sha256:"):]
    value = value.replace(":", "")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise TrustError(f"{text!r} is not a CA fingerprint (expected sha256:<64 hex digits>)")
    return value


def bundle_fingerprint(bundle_pem: bytes | str) -> str:
    """SHA-256 of the DER of the first certificate in the bundle (what `--ca-fingerprint` pins)."""
    try:
        certs = x509.load_pem_x509_certificates(
            bundle_pem.encode("ascii") if isinstance(bundle_pem, str) else bundle_pem)
    except ValueError as exc:
        raise TrustError(f"the trust bundle is not PEM certificates: {exc}") from None
    if not certs:
        raise TrustError("the trust bundle holds no certificate")
    return hashlib.sha256(certs[0].public_bytes(serialization.Encoding.DER)).hexdigest()


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@dataclass
class AgentState:
    """What the agent remembers between runs (agent.json)."""

    proxy_id: str = ""
    fleet_url: str = ""
    service: str = ""
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    config_version: str | None = None  # the controller's version of the config we serve
    revision: str | None = None
    epoch: int = -1  # the newest leadership epoch seen; older snapshots are refused


@dataclass(frozen=True)
class Identity:
    spiffe_id: str
    chain_pem: str
    key_pem: str
    bundle_pem: str
    not_before: datetime
    not_after: datetime

    def snapshot_identity(self) -> dict[str, str]:
        return {"spiffeId": self.spiffe_id, "certificatePem": self.chain_pem,
                "privateKeyPem": self.key_pem, "trustBundlePem": self.bundle_pem}


class StateDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def ensure(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- agent.json ----------------------------------------------------------------------
    def load_state(self) -> AgentState:
        try:
            doc: Any = json.loads((self.path / STATE_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return AgentState()
        if not isinstance(doc, dict):
            return AgentState()
        known = {k: v for k, v in doc.items() if k in AgentState.__dataclass_fields__}
        try:
            return AgentState(**known)
        except TypeError:
            return AgentState()

    def save_state(self, state: AgentState) -> None:
        self.ensure()
        _atomic_write(self.path / STATE_FILE,
                      json.dumps(asdict(state), indent=2, sort_keys=True).encode(), 0o600)

    # -- identity ------------------------------------------------------------------------
    def save_identity(self, key: ec.EllipticCurvePrivateKey | bytes, chain_pem: str,
                      bundle_pem: str) -> Identity:
        """Check the chain belongs to the key, then write key, chain and bundle."""
        pem = key if isinstance(key, bytes) else key_pem(key)
        identity = _identity(chain_pem, pem.decode("ascii"), bundle_pem)
        self.ensure()
        _atomic_write(self.path / KEY_FILE, pem, 0o600)
        _atomic_write(self.path / BUNDLE_FILE, bundle_pem.encode("ascii"), 0o644)
        _atomic_write(self.path / CERT_FILE, chain_pem.encode("ascii"), 0o644)
        return identity

    def load_identity(self) -> Identity:
        try:
            chain = (self.path / CERT_FILE).read_text("ascii")
            key = (self.path / KEY_FILE).read_text("ascii")
            bundle = (self.path / BUNDLE_FILE).read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise IdentityError(f"no usable identity in {self.path}: {exc}") from None
        return _identity(chain, key, bundle)

    def valid_identity(self, now: datetime) -> Identity | None:
        """The identity if present and valid at `now` (with a minute to spare), else None."""
        try:
            identity = self.load_identity()
        except IdentityError:
            return None
        if not identity.not_before <= now < identity.not_after:
            return None
        if (identity.not_after - now).total_seconds() < 60:
            return None
        return identity

    def client_context(self) -> ssl.SSLContext:
        """TLS client context: our SVID, and the controller verified against the bundle."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(self.path / BUNDLE_FILE))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.path / CERT_FILE, self.path / KEY_FILE)
        return ctx


def _identity(chain_pem: str, key_pem_text: str, bundle_pem: str) -> Identity:
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode("ascii"))
        key = serialization.load_pem_private_key(key_pem_text.encode("ascii"), None)
        x509.load_pem_x509_certificates(bundle_pem.encode("ascii"))
    except ValueError as exc:
        raise IdentityError(f"cannot read the certificate, key or bundle: {exc}") from None
    if not chain:
        raise IdentityError("the certificate chain is empty")
    leaf = chain[0]
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise IdentityError("the certificate does not belong to the private key")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        raise IdentityError("the certificate is not an X.509-SVID (one spiffe:// URI SAN)")
    return Identity(uris[0], chain_pem, key_pem_text, bundle_pem,
                    leaf.not_valid_before_utc, leaf.not_valid_after_utc)


def utcnow() -> datetime:
    return datetime.now(UTC)
