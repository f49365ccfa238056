"""Whatever bytes sit in a gpgsig header, the verifier returns a verdict and never raises."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.source import (
    AllowedSigners,
    BadlySigned,
    OpenPgpKeyring,
    SignatureVerdict,
    UnknownKey,
    Unsigned,
    Unsupported,
    Verified,
    parse_allowed_signers,
    verify_commit_signature,
)
from reconciler.source.openpgp import OpenPgpCert, OpenPgpKey
from reconciler.source.sshsig import MAGIC, ssh_string

ED_KEY = ssh_string(b"ssh-ed25519") + ssh_string(bytes(32))
SIGNERS = parse_allowed_signers("x@example.com ssh-ed25519 " + base64.b64encode(ED_KEY).decode())
KEY = OpenPgpKey("0" * 40, 22, 0, (bytes.fromhex("2B06010401DA470F01"), b"\x40" + bytes(32)))
KEYRING = OpenPgpKeyring((OpenPgpCert(KEY, ("x",)),))


def _armor(kind: str, blob: bytes) -> bytes:
    return f"-----BEGIN {kind}-----\n\n{base64.b64encode(blob).decode()}\n-----END {kind}-----\n".encode()


def _judge(signature: bytes) -> SignatureVerdict:
    return verify_commit_signature(
        signature, b"payload", SIGNERS, verify_time=0, openpgp_keys=KEYRING
    )


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    assert not isinstance(_judge(data), Verified)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_random_ssh_blobs(blob: bytes) -> None:
    verdict = _judge(_armor("SSH SIGNATURE", blob))
    assert isinstance(verdict, BadlySigned | Unsupported)


@settings(max_examples=150, deadline=None)
@given(
    key=st.binary(max_size=80),
    namespace=st.binary(max_size=8),
    hash_alg=st.sampled_from([b"sha512", b"sha256", b"md5", b""]),
    sig=st.binary(max_size=120),
)
def test_structured_but_wrong_ssh_blobs(
    key: bytes, namespace: bytes, hash_alg: bytes, sig: bytes
) -> None:
    for public in (key, ED_KEY):
        blob = (
            MAGIC
            + (1).to_bytes(4, "big")
            + b"".join(ssh_string(x) for x in (public, namespace, b"", hash_alg, sig))
        )
        assert isinstance(_judge(_armor("SSH SIGNATURE", blob)), BadlySigned | Unsupported)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_random_pgp_packets(blob: bytes) -> None:
    verdict = _judge(_armor("PGP SIGNATURE", blob))
    assert isinstance(verdict, BadlySigned | Unsupported | UnknownKey)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_v4_signature_packets(tail: bytes) -> None:
    body = b"\x04\x00\x16\x0a" + tail  # v4, binary, EdDSA, SHA512, then noise
    packet = (
        b"\xc2"
        + (bytes([len(body)]) if len(body) < 192 else b"\xff" + len(body).to_bytes(4, "big"))
        + body
    )
    verdict = _judge(_armor("PGP SIGNATURE", packet))
    assert not isinstance(verdict, Verified)


def test_empty_is_unsigned() -> None:
    assert verify_commit_signature(b"", b"p", AllowedSigners(), verify_time=0) == Unsigned()
