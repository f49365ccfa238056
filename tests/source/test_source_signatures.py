"""Commit signatures made by the real tools (git, ssh-keygen), judged by our verifier."""

from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest
from source_helpers import Upstream

from reconciler.source import (
    AllowedSigners,
    BadlySigned,
    GitMirror,
    NotAllowed,
    SignatureMode,
    SignaturePolicy,
    UnknownKey,
    Unsigned,
    Unsupported,
    Verified,
    parse_allowed_signers,
    verify_commit_signature,
)
from reconciler.source.sshsig import MAGIC, dearmor, parse_sshsig, ssh_string

NOW = 1_790_000_000  # 2026-09; injected "now" for the policy


@dataclass(frozen=True)
class Key:
    private: Path
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @property
    def fingerprint(self) -> str:
        out = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{self.private}.pub"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()[1]


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    d = tmp_path_factory.mktemp("keys")
    made = {}
    for name, args in {
        "ed25519": ["-t", "ed25519"],
        "other": ["-t", "ed25519"],
        "ecdsa": ["-t", "ecdsa", "-b", "256"],
        "rsa": ["-t", "rsa", "-b", "3072"],
    }.items():
        path = d / f"id_{name}"
        subprocess.run(
            ["ssh-keygen", "-q", *args, "-N", "", "-C", f"{name}@test", "-f", str(path)],
            check=True,
            capture_output=True,
        )
        made[name] = Key(path, (d / f"id_{name}.pub").read_text().strip())
    return made


def signers(*lines: str) -> AllowedSigners:
    return parse_allowed_signers("\n".join(lines) + "\n")


def signed_commit(upstream: Upstream, key: Key, message: str = "signed change", *extra: str) -> str:
    """A commit signed by git itself, the way users sign theirs."""
    (upstream.path / f"{abs(hash(message))}.yaml").write_text(message)
    upstream.git("add", "-A")
    upstream.git(
        "-c",
        "gpg.format=ssh",
        "-c",
        f"user.signingkey={key.private}",
        "commit",
        "-q",
        "-S",
        "-m",
        message,
        *extra,
    )
    return upstream.head()


def mirrored(tmp_path: Path, upstream: Upstream) -> GitMirror:
    mirror = GitMirror(tmp_path / "mirror.git", str(upstream.path))
    mirror.fetch()
    return mirror


def judge(mirror: GitMirror, oid: str, allowed: AllowedSigners, at: int | None = None) -> object:
    info = mirror.commit_info(oid)
    return verify_commit_signature(
        info.signature,
        info.signed_payload,
        allowed,
        verify_time=info.committer.time if at is None else at,
    )


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_git_signed_commit_verifies(
    tmp_path: Path, upstream: Upstream, keys: dict[str, Key], kind: str
) -> None:
    key = keys[kind]
    oid = signed_commit(upstream, key)
    mirror = mirrored(tmp_path, upstream)
    info = mirror.commit_info(oid)
    assert info.signed and info.signature is not None and info.signed_payload is not None
    assert b"gpgsig" not in info.signed_payload  # what git signed excludes the signature

    verdict = judge(mirror, oid, signers(f"ops@example.com,alice@example.com {key.public_line}"))
    assert verdict == Verified(
        "ops@example.com", key.fingerprint, ("ops@example.com", "alice@example.com")
    )

    # Cross-check: OpenSSH itself accepts the same signature over the same bytes.
    allowed = tmp_path / "allowed"
    allowed.write_text(f"ops@example.com {key.public_line}\n")
    sig = tmp_path / "sig"
    sig.write_bytes(info.signature)
    subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            "ops@example.com",
            "-n",
            "git",
            "-s",
            str(sig),
        ],
        input=info.signed_payload,
        check=True,
        capture_output=True,
    )


def test_tampered_message_is_a_bad_signature(
    tmp_path: Path, upstream: Upstream, keys: dict[str, Key]
) -> None:
    oid = signed_commit(upstream, keys["ed25519"], "route: 10% to v2")
    mirror = mirrored(tmp_path, upstream)
    repo = mirror.repository
    _, raw = repo.read(oid)
    assert b"gpgsig -----BEGIN SSH SIGNATURE-----" in raw
    forged = repo.odb.write(
        pygit2.enums.ObjectType.COMMIT, raw.replace(b"10% to v2", b"100% to v2")
    )
    info = mirror.commit_info(str(forged))
    assert info.summary == "route: 100% to v2"
    assert info.signature == mirror.commit_info(oid).signature  # same gpgsig header

    allowed = signers(f"ops@example.com {keys['ed25519'].public_line}")
    assert judge(mirror, oid, allowed) == Verified(
        "ops@example.com", keys["ed25519"].fingerprint, ("ops@example.com",)
    )
    verdict = judge(mirror, str(forged), allowed)
    assert isinstance(verdict, BadlySigned)
    assert "does not match" in verdict.reason


def _sign_payload(key: Key, payload: bytes, namespace: str, tmp: Path) -> str:
    data = (
        tmp / f"payload-{namespace}-{key.private.name}-{hashlib.sha256(payload).hexdigest()[:12]}"
    )
    data.write_bytes(payload)
    Path(f"{data}.sig").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key.private), str(data)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return Path(f"{data}.sig").read_text()


def test_wrong_namespace_is_a_bad_signature(
    tmp_path: Path, upstream: Upstream, keys: dict[str, Key]
) -> None:
    upstream.commit("unsigned base")
    mirror = mirrored(tmp_path, upstream)
    payload = mirror.repository.read(mirror.require("main"))[1]
    sig = _sign_payload(keys["ed25519"], payload, "file", tmp_path)
    oid = mirror.repository.create_commit_with_signature(payload.decode(), sig)
    verdict = judge(mirror, str(oid), signers(f"ops@example.com {keys['ed25519'].public_line}"))
    assert isinstance(verdict, BadlySigned)
    assert "namespace 'file'" in verdict.reason

    # Signed properly in namespace git, the same content verifies.
    good_sig = _sign_payload(keys["ed25519"], payload, "git", tmp_path)
    good = mirror.repository.create_commit_with_signature(payload.decode(), good_sig)
    allowed = signers(f"ops@example.com {keys['ed25519'].public_line}")
    assert isinstance(judge(mirror, str(good), allowed), Verified)


def test_key_not_in_allowed_signers(
    tmp_path: Path, upstream: Upstream, keys: dict[str, Key]
) -> None:
    oid = signed_commit(upstream, keys["ed25519"])
    mirror = mirrored(tmp_path, upstream)
    assert judge(
        mirror, oid, signers(f"ops@example.com {keys['other'].public_line}")
    ) == UnknownKey(keys["ed25519"].fingerprint)
    assert judge(mirror, oid, AllowedSigners()) == UnknownKey(keys["ed25519"].fingerprint)


def test_validity_window(tmp_path: Path, upstream: Upstream, keys: dict[str, Key]) -> None:
    line = keys["ed25519"].public_line
    oid = signed_commit(upstream, keys["ed25519"])
    mirror = mirrored(tmp_path, upstream)

    expired = judge(mirror, oid, signers(f'ops@example.com valid-before="20200101" {line}'))
    assert isinstance(expired, NotAllowed) and "expired at 2020-01-01T00:00:00Z" in expired.reason
    assert expired.fingerprint == keys["ed25519"].fingerprint

    future = judge(mirror, oid, signers(f'ops@example.com valid-after="29990101Z" {line}'))
    assert isinstance(future, NotAllowed) and "not valid before 2999-01-01" in future.reason

    inside = signers(
        f'ops@example.com valid-after="20200101",valid-before="29990101120000Z" {line}'
    )
    assert isinstance(judge(mirror, oid, inside), Verified)


def test_backdated_commit_cannot_dodge_an_expired_key(
    tmp_path: Path, upstream: Upstream, keys: dict[str, Key]
) -> None:
    upstream.env["GIT_COMMITTER_DATE"] = "2019-06-01T00:00:00Z"
    oid = signed_commit(upstream, keys["ed25519"])
    mirror = mirrored(tmp_path, upstream)
    policy = SignaturePolicy(
        SignatureMode.REQUIRE,
        signers(f'ops@example.com valid-before="20200101" {keys["ed25519"].public_line}'),
    )
    info = mirror.commit_info(oid)
    # At its own (claimed) time the key was valid, as `git verify-commit` would say ...
    assert isinstance(
        policy.decide(info.signature, info.signed_payload, verify_time=info.committer.time).verdict,
        Verified,
    )
    # ... but the policy judges at the later of that and now, so it is refused.
    decision = policy.decide_commit(info, now=NOW)
    assert not decision.deployable and isinstance(decision.verdict, NotAllowed)


def test_namespaces_option(tmp_path: Path, upstream: Upstream, keys: dict[str, Key]) -> None:
    line = keys["ed25519"].public_line
    oid = signed_commit(upstream, keys["ed25519"])
    mirror = mirrored(tmp_path, upstream)
    only_file = judge(mirror, oid, signers(f'ops@example.com namespaces="file" {line}'))
    assert isinstance(only_file, NotAllowed) and "namespace 'git'" in only_file.reason
    assert isinstance(
        judge(mirror, oid, signers(f'ops@example.com namespaces="file,git" {line}')), Verified
    )
    assert isinstance(
        judge(mirror, oid, signers(f'ops@example.com namespaces="g*" {line}')), Verified
    )
    # A second line for the same key that does allow it wins.
    both = signers(f'a@example.com namespaces="file" {line}', f"b@example.com {line}")
    verdict = judge(mirror, oid, both)
    assert isinstance(verdict, Verified) and verdict.principal == "b@example.com"


def test_policy_modes(tmp_path: Path, upstream: Upstream, keys: dict[str, Key]) -> None:
    unsigned = upstream.commit("no signature")
    signed = signed_commit(upstream, keys["ed25519"])
    mirror = mirrored(tmp_path, upstream)
    allowed = signers(f"ops@example.com {keys['ed25519'].public_line}")

    require = SignaturePolicy(SignatureMode.REQUIRE, allowed)
    d = require.decide_commit(mirror.commit_info(unsigned), now=NOW)
    assert d.verdict == Unsigned() and not d.deployable and "not signed" in d.reason
    d = require.decide_commit(mirror.commit_info(signed), now=NOW)
    assert isinstance(d.verdict, Verified) and d.deployable
    assert d.to_dict()["verdict"]["principal"] == "ops@example.com"

    record = SignaturePolicy(SignatureMode.RECORD, allowed)
    d = record.decide_commit(mirror.commit_info(unsigned), now=NOW)
    assert d.verdict == Unsigned() and d.deployable

    off = SignaturePolicy.from_file("off", None)
    d = off.decide_commit(mirror.commit_info(signed), now=NOW)
    assert d.verdict is None and d.deployable

    path = tmp_path / "allowed_signers"
    path.write_text(f"# ops team\n\nops@example.com {keys['ed25519'].public_line}\n")
    loaded = SignaturePolicy.from_file("require", path)
    assert loaded.decide_commit(mirror.commit_info(signed), now=NOW).deployable

    with pytest.raises(ValueError, match="non-empty allowed-signers"):
        SignaturePolicy(SignatureMode.REQUIRE, AllowedSigners())


# -- malformed signatures, built by hand --------------------------------------------------

ARMOR = "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n"
ANY = AllowedSigners()


def _armor(blob: bytes) -> bytes:
    return ARMOR.format(base64.b64encode(blob).decode()).encode()


@pytest.fixture
def real_sig(tmp_path: Path, keys: dict[str, Key]) -> tuple[bytes, bytes]:
    payload = b"tree 0000000000000000000000000000000000000000\n\nmsg\n"
    sig = _sign_payload(keys["ed25519"], payload, "git", tmp_path).encode()
    return sig, payload


@pytest.mark.parametrize(
    ("signature", "fragment"),
    [
        (
            b"-----BEGIN SSH SIGNATURE-----\n!!!not base64!!!\n-----END SSH SIGNATURE-----\n",
            "base64",
        ),
        (b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n", "no END line"),
        (b"random bytes that are no signature", "unrecognised signature format"),
        (_armor(b"NOTSIG" + struct.pack(">I", 1)), "bad magic"),
        (_armor(MAGIC + struct.pack(">I", 2)), "version 2"),
        (_armor(MAGIC + struct.pack(">I", 1) + b"\x00\x00"), "truncated"),
        (_armor(MAGIC + struct.pack(">I", 1) + ssh_string(b"")), "truncated"),
    ],
)
def test_garbage_signatures(signature: bytes, fragment: str) -> None:
    verdict = verify_commit_signature(signature, b"payload", ANY, verify_time=NOW)
    assert isinstance(verdict, BadlySigned)
    assert fragment in verdict.reason


def _rebuild(sig: bytes, **fields: bytes) -> bytes:
    s = parse_sshsig(dearmor(sig))
    parts = {
        "public_key": s.public_key,
        "namespace": s.namespace.encode(),
        "reserved": s.reserved,
        "hash": s.hash_algorithm.encode(),
        "signature": s.signature,
    }
    parts.update(fields)
    blob = (
        MAGIC
        + struct.pack(">I", 1)
        + b"".join(
            ssh_string(parts[k])
            for k in ("public_key", "namespace", "reserved", "hash", "signature")
        )
    )
    return _armor(blob)


def test_field_tampering(real_sig: tuple[bytes, bytes], keys: dict[str, Key]) -> None:
    sig, payload = real_sig
    allowed = signers(f"ops@example.com {keys['ed25519'].public_line}")
    assert isinstance(verify_commit_signature(sig, payload, allowed, verify_time=NOW), Verified)
    assert isinstance(
        verify_commit_signature(_rebuild(sig), payload, allowed, verify_time=NOW), Verified
    )

    cases = {
        "hash": (_rebuild(sig, hash=b"md5"), "hash algorithm"),
        "hash256": (_rebuild(sig, hash=b"sha256"), "does not match"),
        "reserved": (_rebuild(sig, reserved=b"x"), "does not match"),
        "key": (
            _rebuild(sig, public_key=base64.b64decode(keys["other"].public_line.split()[1])),
            "does not match",
        ),
        "trailing": (_armor(dearmor(sig) + b"\x00"), "trailing"),
    }
    for name, (bad, fragment) in cases.items():
        verdict = verify_commit_signature(bad, payload, allowed, verify_time=NOW)
        assert isinstance(verdict, BadlySigned), name
        assert fragment in verdict.reason, (name, verdict)
    assert isinstance(
        verify_commit_signature(sig, payload + b"x", allowed, verify_time=NOW), BadlySigned
    )


def test_other_formats_are_unsupported_not_bad() -> None:
    pgp = b"-----BEGIN PGP SIGNATURE-----\n\niQEz...\n-----END PGP SIGNATURE-----\n"
    assert verify_commit_signature(pgp, b"p", ANY, verify_time=NOW) == Unsupported(
        "openpgp", "no OpenPGP keyring configured"
    )
    x509 = b"-----BEGIN SIGNED MESSAGE-----\nMIAG\n-----END SIGNED MESSAGE-----\n"
    assert verify_commit_signature(x509, b"p", ANY, verify_time=NOW) == Unsupported("x509")
    assert verify_commit_signature(None, None, ANY, verify_time=NOW) == Unsigned()
    assert verify_commit_signature(b"  \n", b"p", ANY, verify_time=NOW) == Unsigned()


def test_unsupported_key_type(real_sig: tuple[bytes, bytes]) -> None:
    sig, payload = real_sig
    odd_key = ssh_string(b"ssh-dss") + ssh_string(b"\x01")
    assert verify_commit_signature(
        _rebuild(sig, public_key=odd_key), payload, ANY, verify_time=NOW
    ) == Unsupported("ssh-dss")


def test_the_loop_the_pipeline_will_run(
    tmp_path: Path, upstream: Upstream, keys: dict[str, Key]
) -> None:
    """Coordinator -> fetch -> observe_branch -> policy, as `meshcd serve` wires it."""
    from reconciler.source import FetchCoordinator, FetchOutcome, FetchResult, observe_branch

    mirror = GitMirror(tmp_path / "mirror.git", str(upstream.path))
    policy = SignaturePolicy(
        SignatureMode.REQUIRE, signers(f"ops@example.com {keys['ed25519'].public_line}")
    )
    deployed: list[str] = []
    recorded: list[dict[str, object]] = []

    def after_fetch(outcome: FetchOutcome[FetchResult]) -> None:
        assert outcome.ok, outcome.error
        previous = deployed[-1] if deployed else None
        seen = observe_branch(mirror, "main", previous, policy, now=NOW)
        recorded.append(seen.to_dict())
        if seen.deployable and seen.commit is not None:
            deployed.append(seen.commit.id)

    with FetchCoordinator(mirror.fetch, on_outcome=after_fetch) as coord:
        good = signed_commit(upstream, keys["ed25519"], "signed route change")
        coord.refresh("webhook").result(30)
        assert deployed == [good]

        upstream.commit("unsigned sneaky change")
        coord.refresh("webhook").result(30)
        assert deployed == [good]  # recorded, never deployed
        last = recorded[-1]
        assert last["event"]["kind"] == "new_commit"  # type: ignore[index]
        assert last["signature"]["verdict"]["kind"] == "unsigned"  # type: ignore[index]
        assert last["signature"]["deployable"] is False  # type: ignore[index]
