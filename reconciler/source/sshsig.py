"""SSH signatures (OpenSSH's SSHSIG format, as `git -c gpg.format=ssh` writes them). Pure.

Wire format (OpenSSH PROTOCOL.sshsig), all strings are uint32-length-prefixed:

  blob        = "SSHSIG" uint32(1) string(publickey) string(namespace) string(reserved)
                string(hash_algorithm) string(signature)
  signed data = "SSHSIG" string(namespace) string(reserved) string(hash_algorithm)
                string(H(message))
  signature   = string(algorithm) string(raw signature)

Keys: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa (signatures rsa-sha2-256/512 only;
SHA-1 "ssh-rsa" signatures are refused, as OpenSSH does for SSHSIG). FIDO (sk-*) keys and
certificates are reported unsupported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .errors import SourceError

MAGIC = b"SSHSIG"
VERSION = 1
ARMOR_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
ARMOR_END = b"-----END SSH SIGNATURE-----"
HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "ecdsa-sha2-nistp256": (ec.SECP256R1(), hashes.SHA256()),
    "ecdsa-sha2-nistp384": (ec.SECP384R1(), hashes.SHA384()),
    "ecdsa-sha2-nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
_RSA_SIG_HASHES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}
SUPPORTED_KEY_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", *_CURVES})


class SshSigError(SourceError, ValueError):
    """The signature is malformed or does not verify; the message says which."""


class UnsupportedKeyType(SshSigError):
    """A well-formed signature made with a key type we cannot check."""


@dataclass(frozen=True)
class SshSignature:
    public_key: bytes  # the signer's public key in SSH wire form
    namespace: str
    reserved: bytes
    hash_algorithm: str
    signature: bytes  # string(algorithm) string(raw signature)

    @property
    def key_type(self) -> str:
        return key_type_of(self.public_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise SshSigError("truncated SSH data")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.u32())

    def text(self) -> str:
        try:
            return self.string().decode("ascii")
        except UnicodeDecodeError:
            raise SshSigError("non-ASCII name in SSH data") from None

    def mpint(self) -> int:
        raw = self.string()
        value = int.from_bytes(raw, "big", signed=True) if raw else 0
        if value < 0:
            raise SshSigError("negative integer in SSH data")
        return value

    def end(self) -> None:
        if self._pos != len(self._data):
            raise SshSigError("trailing bytes in SSH data")


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def fingerprint(public_key: bytes) -> str:
    """OpenSSH's SHA256 fingerprint: `SHA256:` + unpadded base64 of SHA-256(key blob)."""
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def key_type_of(public_key: bytes) -> str:
    return _Reader(public_key).text()


def dearmor(armored: bytes | str) -> bytes:
    """The SSHSIG blob inside `-----BEGIN SSH SIGNATURE-----` armor."""
    data = armored.encode("ascii", "replace") if isinstance(armored, str) else armored
    data = data.strip()
    if not data.startswith(ARMOR_BEGIN):
        raise SshSigError("not an SSH signature (missing BEGIN SSH SIGNATURE line)")
    end = data.find(ARMOR_END)
    if end < 0:
        raise SshSigError("SSH signature armor has no END line")
    if data[end + len(ARMOR_END) :].strip():
        raise SshSigError("data after the SSH signature armor")
    body = b"".join(data[len(ARMOR_BEGIN) : end].split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise SshSigError("SSH signature armor is not valid base64") from None


def parse_sshsig(blob: bytes) -> SshSignature:
    """Parse an SSHSIG blob (already de-armored)."""
    r = _Reader(blob)
    if r.take(len(MAGIC)) != MAGIC:
        raise SshSigError("not an SSHSIG blob (bad magic)")
    version = r.u32()
    if version != VERSION:
        raise SshSigError(f"unsupported SSHSIG version {version}")
    public_key = r.string()
    namespace_raw = r.string()
    reserved = r.string()
    hash_algorithm = r.text()
    signature = r.string()
    r.end()
    try:
        namespace = namespace_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SshSigError("SSHSIG namespace is not UTF-8") from None
    if not public_key:
        raise SshSigError("SSHSIG has an empty public key")
    key_type_of(public_key)  # must at least start with a key type
    return SshSignature(public_key, namespace, reserved, hash_algorithm, signature)


def signed_data(namespace: str, reserved: bytes, hash_algorithm: str, message: bytes) -> bytes:
    """The bytes the signer's key actually signed, per PROTOCOL.sshsig."""
    hasher = HASHES.get(hash_algorithm)
    if hasher is None:
        raise SshSigError(f"unsupported SSHSIG hash algorithm {hash_algorithm!r}")
    return (
        MAGIC
        + ssh_string(namespace.encode("utf-8"))
        + ssh_string(reserved)
        + ssh_string(hash_algorithm.encode("ascii"))
        + ssh_string(hasher(message).digest())
    )


def verify_sshsig(sig: SshSignature, message: bytes, *, namespace: str = "git") -> None:
    """Raise SshSigError unless `sig` is a valid signature of `message` in `namespace`."""
    if sig.namespace != namespace:
        raise SshSigError(f"signed for namespace {sig.namespace!r}, expected {namespace!r}")
    data = signed_data(sig.namespace, sig.reserved, sig.hash_algorithm, message)
    sr = _Reader(sig.signature)
    algorithm = sr.text()
    raw = sr.string()
    sr.end()
    key = _Reader(sig.public_key)
    key_type = key.text()
    try:
        if key_type == "ssh-ed25519":
            public = key.string()
            key.end()
            if algorithm != key_type:
                raise SshSigError(
                    f"signature algorithm {algorithm!r} does not match key {key_type!r}"
                )
            if len(public) != 32:
                raise SshSigError("ed25519 public key is not 32 bytes")
            Ed25519PublicKey.from_public_bytes(public).verify(raw, data)
        elif key_type in _CURVES:
            curve, digest = _CURVES[key_type]
            key.text()  # curve identifier, implied by the key type
            point = key.string()
            key.end()
            if algorithm != key_type:
                raise SshSigError(
                    f"signature algorithm {algorithm!r} does not match key {key_type!r}"
                )
            sr2 = _Reader(raw)
            r_, s_ = sr2.mpint(), sr2.mpint()
            sr2.end()
            try:
                ec_key = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
            except ValueError:
                raise SshSigError("invalid ECDSA public key") from None
            ec_key.verify(encode_dss_signature(r_, s_), data, ec.ECDSA(digest))
        elif key_type == "ssh-rsa":
            e, n = key.mpint(), key.mpint()
            key.end()
            rsa_hash = _RSA_SIG_HASHES.get(algorithm)
            if rsa_hash is None:
                raise SshSigError(
                    f"RSA signature algorithm {algorithm!r} is not accepted (use rsa-sha2-512)"
                )
            if n.bit_length() < 2048:
                raise SshSigError("RSA keys shorter than 2048 bits are not accepted")
            try:
                rsa_key = rsa.RSAPublicNumbers(e, n).public_key()
            except ValueError:
                raise SshSigError("invalid RSA public key") from None
            rsa_key.verify(raw, data, padding.PKCS1v15(), rsa_hash)
        else:
            raise UnsupportedKeyType(f"unsupported key type {key_type!r}")
    except InvalidSignature:
        raise SshSigError("signature does not match the signed content") from None
