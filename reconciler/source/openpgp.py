"""OpenPGP signatures on commits (what `git commit -S` writes with gpg), verified in Python.

Pure: parses RFC 4880 / RFC 9580 armor and packets itself and verifies with
`cryptography`; never calls gpg. Deliberately small:

* signatures: version 4, type 0x00 (binary document: git signs that way), hashes SHA-224/
  256/384/512 (MD5 and SHA-1 are refused);
* keys: version 4; RSA, EdDSA on Ed25519 (the "legacy" form gpg 2.2 makes), native
  Ed25519 (RFC 9580), ECDSA on NIST P-256/384/521;
* trust: every key (primary or subkey) in the operator's keyring file is trusted as it is.
  Self-signatures, key expiry and revocations inside the key block are not evaluated:
  to withdraw a key, remove it from the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from .errors import SourceError


class OpenPgpError(SourceError, ValueError):
    """Malformed OpenPGP data, or a signature that does not verify."""


class UnsupportedOpenPgp(OpenPgpError):
    """Well-formed, but a version or algorithm this verifier does not handle."""


_HASHES: dict[int, tuple[str, Callable[[], Any], hashes.HashAlgorithm]] = {
    8: ("SHA256", hashlib.sha256, hashes.SHA256()),
    9: ("SHA384", hashlib.sha384, hashes.SHA384()),
    10: ("SHA512", hashlib.sha512, hashes.SHA512()),
    11: ("SHA224", hashlib.sha224, hashes.SHA224()),
}
_WEAK_HASHES = {1: "MD5", 2: "SHA1", 3: "RIPEMD160"}
_RSA = {1, 3}
_ECDSA = 19
_EDDSA_LEGACY = 22
_ED25519 = 27
_ED25519_OID = bytes.fromhex("2B06010401DA470F01")
_CURVES: dict[bytes, ec.EllipticCurve] = {
    bytes.fromhex("2A8648CE3D030107"): ec.SECP256R1(),
    bytes.fromhex("2B81040022"): ec.SECP384R1(),
    bytes.fromhex("2B81040023"): ec.SECP521R1(),
}
TAG_SIGNATURE, TAG_SECRET_KEY, TAG_PUBLIC_KEY, TAG_SECRET_SUBKEY = 2, 5, 6, 7
TAG_USER_ID, TAG_PUBLIC_SUBKEY = 13, 14


# -- armor and packets -------------------------------------------------------------------


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor_blocks(text: bytes | str) -> list[tuple[str, bytes]]:
    """Every `-----BEGIN PGP <TYPE>-----` block in `text`, as (TYPE, binary data)."""
    lines = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).splitlines()
    blocks: list[tuple[str, bytes]] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not (line.startswith("-----BEGIN PGP ") and line.endswith("-----")):
            continue
        kind = line[len("-----BEGIN PGP ") : -5]
        while i < len(lines) and lines[i].strip() and ":" in lines[i]:
            i += 1  # armor headers (Version:, Comment:, ...)
        body: list[str] = []
        checksum: str | None = None
        while i < len(lines) and not lines[i].strip().startswith("-----END PGP "):
            part = lines[i].strip()
            if part.startswith("=") and len(part) == 5:
                checksum = part[1:]
            elif part:
                body.append(part)
            i += 1
        if i >= len(lines) or lines[i].strip() != f"-----END PGP {kind}-----":
            raise OpenPgpError(f"PGP {kind} armor has no matching END line")
        i += 1
        try:
            data = base64.b64decode("".join(body), validate=True)
            crc = base64.b64decode(checksum, validate=True) if checksum else None
        except (binascii.Error, ValueError):
            raise OpenPgpError(f"PGP {kind} armor is not valid base64") from None
        if crc is not None and int.from_bytes(crc, "big") != _crc24(data):
            raise OpenPgpError(f"PGP {kind} armor checksum does not match")
        blocks.append((kind, data))
    if not blocks:
        raise OpenPgpError("no PGP armor found")
    return blocks


def packets(data: bytes) -> list[tuple[int, bytes]]:
    """Split binary OpenPGP data into (tag, body) packets."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        pos += 1
        if not first & 0x80:
            raise OpenPgpError("not an OpenPGP packet header")
        if first & 0x40:  # new format
            tag = first & 0x3F
            if pos >= len(data):
                raise OpenPgpError("truncated packet header")
            o1 = data[pos]
            if o1 < 192:
                length, pos = o1, pos + 1
            elif o1 < 224:
                if pos + 1 >= len(data):
                    raise OpenPgpError("truncated packet header")
                length, pos = ((o1 - 192) << 8) + data[pos + 1] + 192, pos + 2
            elif o1 == 255:
                length, pos = int.from_bytes(_slice(data, pos + 1, 4), "big"), pos + 5
            else:
                raise UnsupportedOpenPgp(
                    "partial body lengths are not used for keys and signatures"
                )
        else:  # old format
            tag, kind = (first >> 2) & 0x0F, first & 0x03
            if kind == 3:
                length = len(data) - pos
            else:
                size = (1, 2, 4)[kind]
                length, pos = int.from_bytes(_slice(data, pos, size), "big"), pos + size
        out.append((tag, _slice(data, pos, length)))
        pos += length
    return out


def _slice(data: bytes, start: int, length: int) -> bytes:
    if start + length > len(data):
        raise OpenPgpError("truncated OpenPGP data")
    return data[start : start + length]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        chunk = _slice(self.data, self.pos, n)
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def mpi(self) -> bytes:
        bits = self.u16()
        return self.take((bits + 7) // 8)

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)


# -- keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenPgpKey:
    """One v4 public key or subkey, ready to verify with."""

    fingerprint: str  # 40 hex, upper case
    algorithm: int
    created: int
    material: tuple[bytes, ...] = field(repr=False)  # algorithm-specific fields

    @property
    def key_id(self) -> str:
        return self.fingerprint[-16:]


@dataclass(frozen=True)
class OpenPgpCert:
    """A primary key with its user IDs and subkeys, as exported by `gpg --export`."""

    primary: OpenPgpKey
    user_ids: tuple[str, ...]
    subkeys: tuple[OpenPgpKey, ...] = ()

    @property
    def keys(self) -> tuple[OpenPgpKey, ...]:
        return (self.primary, *self.subkeys)


@dataclass(frozen=True)
class OpenPgpKeyring:
    certs: tuple[OpenPgpCert, ...] = ()

    def __len__(self) -> int:
        return len(self.certs)

    def find(
        self, fingerprint: str | None, key_id: str | None
    ) -> tuple[OpenPgpCert, OpenPgpKey] | None:
        for cert in self.certs:
            for key in cert.keys:
                if fingerprint is not None and key.fingerprint == fingerprint:
                    return cert, key
                if fingerprint is None and key_id is not None and key.key_id == key_id:
                    return cert, key
        return None


def _parse_key(body: bytes) -> OpenPgpKey:
    r = _Reader(body)
    version = r.byte()
    if version != 4:
        raise UnsupportedOpenPgp(f"OpenPGP key version {version}")
    created = r.u32()
    algorithm = r.byte()
    material: tuple[bytes, ...]
    if algorithm in _RSA:
        material = (r.mpi(), r.mpi())  # n, e
    elif algorithm in (_ECDSA, _EDDSA_LEGACY):
        oid = r.take(r.byte())
        material = (oid, r.mpi())  # curve, point
    elif algorithm == _ED25519:
        material = (r.take(32),)
    else:
        material = (r.rest(),)  # kept so the fingerprint is right; verify() refuses it
    r.rest()
    fpr = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    return OpenPgpKey(fpr, algorithm, created, material)


def parse_keyring(text: bytes | str) -> OpenPgpKeyring:
    """Public keys from one or more armored `PUBLIC KEY BLOCK`s (`gpg --armor --export`)."""
    certs: list[OpenPgpCert] = []
    for kind, data in dearmor_blocks(text):
        if kind == "PRIVATE KEY BLOCK":
            raise OpenPgpError("this is a secret key; give the public key (gpg --export)")
        if kind != "PUBLIC KEY BLOCK":
            raise OpenPgpError(f"expected PUBLIC KEY BLOCK, found {kind}")
        primary: OpenPgpKey | None = None
        uids: list[str] = []
        subs: list[OpenPgpKey] = []
        for tag, body in packets(data):
            if tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY):
                raise OpenPgpError("this is a secret key; give the public key (gpg --export)")
            if tag == TAG_PUBLIC_KEY:
                if primary is not None:
                    certs.append(OpenPgpCert(primary, tuple(uids), tuple(subs)))
                primary, uids, subs = _parse_key(body), [], []
            elif primary is None:
                raise OpenPgpError("key block does not start with a public key")
            elif tag == TAG_USER_ID:
                uids.append(body.decode("utf-8", "replace"))
            elif tag == TAG_PUBLIC_SUBKEY:
                subs.append(_parse_key(body))
        if primary is None:
            raise OpenPgpError("key block holds no public key")
        certs.append(OpenPgpCert(primary, tuple(uids), tuple(subs)))
    return OpenPgpKeyring(tuple(certs))


# -- signatures ------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenPgpSignature:
    sig_type: int
    algorithm: int
    hash_algorithm: int
    hashed: bytes = field(repr=False)  # the signature packet up to the hashed subpackets' end
    left16: bytes = field(repr=False)
    values: tuple[bytes, ...] = field(repr=False)
    issuer_fingerprint: str | None = None
    issuer_key_id: str | None = None
    created: int | None = None


def parse_signature(armored: bytes | str) -> OpenPgpSignature:
    blocks = dearmor_blocks(armored)
    if len(blocks) != 1 or blocks[0][0] != "SIGNATURE":
        raise OpenPgpError("expected exactly one PGP SIGNATURE block")
    pkts = packets(blocks[0][1])
    if len(pkts) != 1 or pkts[0][0] != TAG_SIGNATURE:
        raise OpenPgpError("expected exactly one signature packet")
    body = pkts[0][1]
    r = _Reader(body)
    version = r.byte()
    if version != 4:
        raise UnsupportedOpenPgp(f"OpenPGP signature version {version}")
    sig_type, algorithm, hash_algorithm = r.byte(), r.byte(), r.byte()
    hashed_area = r.take(r.u16())
    hashed = body[: r.pos]
    unhashed_area = r.take(r.u16())
    left16 = r.take(2)
    values: tuple[bytes, ...]
    if algorithm in _RSA:
        values = (r.mpi(),)
    elif algorithm in (_ECDSA, _EDDSA_LEGACY):
        values = (r.mpi(), r.mpi())
    elif algorithm == _ED25519:
        values = (r.take(64),)
    else:
        values = (r.rest(),)
    fpr, key_id, created = None, None, None
    for area, trusted in ((hashed_area, True), (unhashed_area, False)):
        for sub_type, sub in _subpackets(area):
            if sub_type == 33 and trusted and len(sub) == 21 and sub[0] == 4:
                fpr = sub[1:].hex().upper()
            elif sub_type == 16 and len(sub) == 8:
                key_id = key_id or sub.hex().upper()
            elif sub_type == 2 and trusted and len(sub) == 4:
                created = int.from_bytes(sub, "big")
    return OpenPgpSignature(
        sig_type, algorithm, hash_algorithm, hashed, left16, values, fpr, key_id, created
    )


def _subpackets(area: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    r = _Reader(area)
    while r.pos < len(area):
        o1 = r.byte()
        if o1 < 192:
            length = o1
        elif o1 < 255:
            length = ((o1 - 192) << 8) + r.byte() + 192
        else:
            length = r.u32()
        if length == 0:
            raise OpenPgpError("empty signature subpacket")
        chunk = r.take(length)
        out.append((chunk[0] & 0x7F, chunk[1:]))
    return out


def verify_signature(sig: OpenPgpSignature, data: bytes, key: OpenPgpKey) -> None:
    """Raise OpenPgpError unless `sig` is `key`'s valid signature over `data`."""
    if sig.sig_type != 0x00:
        raise UnsupportedOpenPgp(f"signature type 0x{sig.sig_type:02x} (git signs binary, 0x00)")
    if sig.hash_algorithm in _WEAK_HASHES:
        raise OpenPgpError(f"weak hash algorithm {_WEAK_HASHES[sig.hash_algorithm]} is refused")
    if sig.hash_algorithm not in _HASHES:
        raise UnsupportedOpenPgp(f"hash algorithm {sig.hash_algorithm}")
    if sig.algorithm != key.algorithm and not (sig.algorithm in _RSA and key.algorithm in _RSA):
        raise OpenPgpError("signature algorithm does not match the key")
    _, hasher, hash_obj = _HASHES[sig.hash_algorithm]
    h = hasher()
    h.update(data)
    h.update(sig.hashed)
    h.update(b"\x04\xff" + len(sig.hashed).to_bytes(4, "big"))
    digest: bytes = h.digest()
    if digest[:2] != sig.left16:
        raise OpenPgpError("signature does not match the signed content")
    try:
        if key.algorithm in _RSA:
            n, e = (int.from_bytes(m, "big") for m in key.material)
            if n.bit_length() < 2048:
                raise OpenPgpError("RSA keys shorter than 2048 bits are refused")
            value = sig.values[0].rjust((n.bit_length() + 7) // 8, b"\x00")
            public = rsa.RSAPublicNumbers(e, n).public_key()
            public.verify(value, digest, padding.PKCS1v15(), Prehashed(hash_obj))
        elif key.algorithm == _EDDSA_LEGACY:
            oid, point = key.material
            if oid != _ED25519_OID or len(point) != 33 or point[0] != 0x40:
                raise UnsupportedOpenPgp("EdDSA key on a curve other than Ed25519")
            r_, s_ = (v.rjust(32, b"\x00") for v in sig.values)
            Ed25519PublicKey.from_public_bytes(point[1:]).verify(r_ + s_, digest)
        elif key.algorithm == _ED25519:
            Ed25519PublicKey.from_public_bytes(key.material[0]).verify(sig.values[0], digest)
        elif key.algorithm == _ECDSA:
            oid, point = key.material
            curve = _CURVES.get(oid)
            if curve is None:
                raise UnsupportedOpenPgp("ECDSA key on an unsupported curve")
            public_ec = ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
            r_int, s_int = (int.from_bytes(v, "big") for v in sig.values)
            public_ec.verify(
                encode_dss_signature(r_int, s_int), digest, ec.ECDSA(Prehashed(hash_obj))
            )
        else:
            raise UnsupportedOpenPgp(f"public-key algorithm {key.algorithm}")
    except InvalidSignature:
        raise OpenPgpError("signature does not match the signed content") from None
    except ValueError as exc:
        if isinstance(exc, OpenPgpError):
            raise
        raise OpenPgpError(f"invalid key or signature values: {exc}") from None
