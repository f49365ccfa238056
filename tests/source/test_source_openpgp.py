"""OpenPGP-signed commits made by git + gpg, verified by our pure-Python verifier."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest
from source_helpers import Upstream

from reconciler.source import (
    AllowedSigners,
    BadlySigned,
    GitMirror,
    SignatureMode,
    SignaturePolicy,
    UnknownKey,
    Unsupported,
    Verified,
    verify_commit_signature,
)
from reconciler.source.openpgp import OpenPgpError, dearmor_blocks, packets, parse_keyring

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")

NOW = 1_790_000_000


@dataclass(frozen=True)
class Gpg:
    home: Path
    fingerprints: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}

    def run(self, *args: str, data: bytes | None = None) -> bytes:
        return subprocess.run(
            ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "", *args],
            env=self.env,
            input=data,
            check=True,
            capture_output=True,
        ).stdout

    def export(self, *names: str) -> bytes:
        return self.run("--armor", "--export", *(self.fingerprints[n] for n in names))

    def sign(self, name: str, data: bytes, *extra: str) -> str:
        return self.run(
            "--armor", "--detach-sign", "--local-user", self.fingerprints[name], *extra, data=data
        ).decode()


@pytest.fixture(scope="session")
def gpg() -> Iterator[Gpg]:
    # A short path: gpg-agent's socket path must fit in 108 bytes.
    home = Path(tempfile.mkdtemp(prefix="mcd-gpg-"))
    home.chmod(0o700)
    fprs: dict[str, str] = {}
    g = Gpg(home, fprs)
    try:
        for name, algo in {
            "ed25519": "ed25519",
            "rsa": "rsa3072",
            "p256": "nistp256",
            "other": "ed25519",
        }.items():
            g.run(
                "--quick-gen-key",
                f"{name.title()} Signer <{name}@example.com>",
                algo,
                "sign",
                "never",
            )
            listing = g.run("--with-colons", "--list-keys", f"{name}@example.com").decode()
            fprs[name] = next(
                line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
            )
        yield g
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=g.env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def gpg_signed_commit(
    upstream: Upstream, gpg: Gpg, name: str, message: str = "signed with gpg"
) -> str:
    (upstream.path / f"{abs(hash(message))}.yaml").write_text(message)
    upstream.git("add", "-A")
    subprocess.run(
        [
            "git",
            "-c",
            "gpg.format=openpgp",
            "-c",
            f"user.signingkey={gpg.fingerprints[name]}",
            "commit",
            "-q",
            "-S",
            "-m",
            message,
        ],
        cwd=upstream.path,
        env={**upstream.env, "GNUPGHOME": str(gpg.home)},
        check=True,
        capture_output=True,
    )
    return upstream.head()


def mirrored(tmp_path: Path, upstream: Upstream) -> GitMirror:
    mirror = GitMirror(tmp_path / "mirror.git", str(upstream.path))
    mirror.fetch()
    return mirror


@pytest.mark.parametrize("name", ["ed25519", "rsa", "p256"])
def test_gpg_signed_commit_verifies(
    tmp_path: Path, upstream: Upstream, gpg: Gpg, name: str
) -> None:
    oid = gpg_signed_commit(upstream, gpg, name)
    mirror = mirrored(tmp_path, upstream)
    info = mirror.commit_info(oid)
    assert info.signature is not None and info.signature.startswith(
        b"-----BEGIN PGP SIGNATURE-----"
    )
    keyring = parse_keyring(gpg.export("other", name))
    verdict = verify_commit_signature(
        info.signature, info.signed_payload, AllowedSigners(), verify_time=NOW, openpgp_keys=keyring
    )
    principal = f"{name.title()} Signer <{name}@example.com>"
    assert verdict == Verified(principal, gpg.fingerprints[name], (principal,))


def test_tampered_gpg_commit_is_bad(tmp_path: Path, upstream: Upstream, gpg: Gpg) -> None:
    oid = gpg_signed_commit(upstream, gpg, "ed25519", "route: 10% to v2")
    mirror = mirrored(tmp_path, upstream)
    raw = mirror.repository.read(oid)[1]
    forged = mirror.repository.odb.write(
        pygit2.enums.ObjectType.COMMIT, raw.replace(b"10% to v2", b"100% to v2")
    )
    info = mirror.commit_info(str(forged))
    verdict = verify_commit_signature(
        info.signature,
        info.signed_payload,
        AllowedSigners(),
        verify_time=NOW,
        openpgp_keys=parse_keyring(gpg.export("ed25519")),
    )
    assert isinstance(verdict, BadlySigned) and "does not match" in verdict.reason


def _packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        size = bytes([n])
    elif n < 8384:
        size = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        size = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + size + body


def _corrupt_value(armored: str) -> bytes:
    """Flip one bit of the signature value itself, keeping the hash quick-check intact."""
    ((_, data),) = dearmor_blocks(armored)
    ((tag, body),) = packets(data)
    body = body[:-1] + bytes([body[-1] ^ 0x01])
    b64 = base64.b64encode(_packet(tag, body)).decode()
    return f"-----BEGIN PGP SIGNATURE-----\n\n{b64}\n-----END PGP SIGNATURE-----\n".encode()


@pytest.mark.parametrize("name", ["ed25519", "rsa", "p256"])
def test_changed_payload_or_signature_value_is_bad(gpg: Gpg, name: str) -> None:
    payload = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nmsg\n"
    sig = gpg.sign(name, payload)
    keyring = parse_keyring(gpg.export(name))

    def judge(signature: bytes, data: bytes) -> object:
        return verify_commit_signature(
            signature, data, AllowedSigners(), verify_time=NOW, openpgp_keys=keyring
        )

    assert isinstance(judge(sig.encode(), payload), Verified)
    assert isinstance(judge(sig.encode(), payload + b" "), BadlySigned)
    # The quick-check bytes still match here, so only the real verification can say no.
    corrupted = judge(_corrupt_value(sig), payload)
    assert isinstance(corrupted, BadlySigned) and "does not match" in corrupted.reason, corrupted


def test_unknown_key_and_no_keyring(tmp_path: Path, upstream: Upstream, gpg: Gpg) -> None:
    oid = gpg_signed_commit(upstream, gpg, "ed25519")
    info = mirrored(tmp_path, upstream).commit_info(oid)
    verdict = verify_commit_signature(
        info.signature,
        info.signed_payload,
        AllowedSigners(),
        verify_time=NOW,
        openpgp_keys=parse_keyring(gpg.export("other")),
    )
    assert verdict == UnknownKey(gpg.fingerprints["ed25519"])
    none = verify_commit_signature(
        info.signature, info.signed_payload, AllowedSigners(), verify_time=NOW
    )
    assert isinstance(none, Unsupported) and none.format == "openpgp"


def test_sha1_signatures_are_refused(gpg: Gpg) -> None:
    payload = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nmsg\n"
    sig = gpg.sign("rsa", payload, "--digest-algo", "SHA1").encode()
    verdict = verify_commit_signature(
        sig,
        payload,
        AllowedSigners(),
        verify_time=NOW,
        openpgp_keys=parse_keyring(gpg.export("rsa")),
    )
    assert isinstance(verdict, BadlySigned) and "SHA1" in verdict.reason


def test_policy_with_a_keyring_file(tmp_path: Path, upstream: Upstream, gpg: Gpg) -> None:
    signed = gpg_signed_commit(upstream, gpg, "ed25519")
    unsigned = upstream.commit("plain")
    mirror = mirrored(tmp_path, upstream)
    keyring = tmp_path / "keys.asc"
    keyring.write_bytes(gpg.export("ed25519"))
    policy = SignaturePolicy.from_file(SignatureMode.REQUIRE, None, keyring)
    assert policy.decide_commit(mirror.commit_info(signed), now=NOW).deployable
    assert not policy.decide_commit(mirror.commit_info(unsigned), now=NOW).deployable


def test_armor_and_keyring_errors(gpg: Gpg) -> None:
    exported = gpg.export("ed25519").decode()
    with pytest.raises(OpenPgpError, match="no PGP armor"):
        parse_keyring("just text")
    lines = exported.splitlines()
    checksum_line = next(
        i for i, line in enumerate(lines) if line.startswith("=") and len(line) == 5
    )
    broken = list(lines)
    broken[checksum_line] = "=AAAA" if lines[checksum_line] != "=AAAA" else "=BBBB"
    with pytest.raises(OpenPgpError, match="checksum"):
        parse_keyring("\n".join(broken))
    with pytest.raises(OpenPgpError, match="END"):
        parse_keyring("\n".join(lines[:-1]))
    secret = gpg.run("--armor", "--export-secret-keys", gpg.fingerprints["ed25519"])
    with pytest.raises(OpenPgpError, match="secret key"):
        parse_keyring(secret)
    # Packets survive a round trip through our parser: the primary key parses to gpg's fingerprint.
    ((kind, data),) = dearmor_blocks(exported)
    assert kind == "PUBLIC KEY BLOCK" and packets(data)[0][0] == 6
    assert parse_keyring(exported).certs[0].primary.fingerprint == gpg.fingerprints["ed25519"]


@pytest.mark.parametrize(
    "signature",
    [
        b"-----BEGIN PGP SIGNATURE-----\n\n!!!!\n-----END PGP SIGNATURE-----\n",
        b"-----BEGIN PGP SIGNATURE-----\n\nwsBc\n-----END PGP SIGNATURE-----\n",
        b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
    ],
)
def test_garbage_pgp_signatures_are_bad(gpg: Gpg, signature: bytes) -> None:
    verdict = verify_commit_signature(
        signature,
        b"x",
        AllowedSigners(),
        verify_time=NOW,
        openpgp_keys=parse_keyring(gpg.export("rsa")),
    )
    assert isinstance(verdict, BadlySigned)
