"""The commit-signature verdict and the policy that says whether a commit may deploy. Pure.

`verify_commit_signature` looks only at bytes: the commit's `gpgsig` header value and the
commit object without it (what git signed), the allowed signers, and the time to judge key
validity at (`SignaturePolicy.decide_commit` uses the later of committer time and now).

Verdicts: Verified, Unsigned, BadlySigned, UnknownKey, NotAllowed, Unsupported. The caller
records the verdict and enforces the decision; a commit that fails the policy is never
deployed.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .allowed_signers import AllowedSigners, parse_allowed_signers
from .model import CommitInfo
from .openpgp import (
    OpenPgpError,
    OpenPgpKeyring,
    UnsupportedOpenPgp,
    parse_keyring,
    parse_signature,
)
from .openpgp import verify_signature as verify_openpgp
from .sshsig import (
    ARMOR_BEGIN,
    SshSigError,
    UnsupportedKeyType,
    dearmor,
    parse_sshsig,
    verify_sshsig,
)

GIT_NAMESPACE = "git"


class _Verdict:
    kind: str

    @property
    def ok(self) -> bool:
        return self.kind == "verified"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Verified(_Verdict):
    principal: str  # the first principal of the matching allowed-signers line
    fingerprint: str  # SHA256:...
    principals: tuple[str, ...] = ()
    kind: Literal["verified"] = "verified"


@dataclass(frozen=True)
class Unsigned(_Verdict):
    kind: Literal["unsigned"] = "unsigned"


@dataclass(frozen=True)
class BadlySigned(_Verdict):
    reason: str
    kind: Literal["bad_signature"] = "bad_signature"


@dataclass(frozen=True)
class UnknownKey(_Verdict):
    fingerprint: str
    kind: Literal["unknown_key"] = "unknown_key"


@dataclass(frozen=True)
class NotAllowed(_Verdict):
    reason: str
    fingerprint: str = ""
    kind: Literal["not_allowed"] = "not_allowed"


@dataclass(frozen=True)
class Unsupported(_Verdict):
    format: str  # "openpgp", "x509", "ssh-certificate", or the key type
    detail: str = ""
    kind: Literal["unsupported"] = "unsupported"


SignatureVerdict = Verified | Unsigned | BadlySigned | UnknownKey | NotAllowed | Unsupported


def verify_commit_signature(
    signature: bytes | None,
    signed_payload: bytes | None,
    signers: AllowedSigners,
    *,
    verify_time: int,
    openpgp_keys: OpenPgpKeyring | None = None,
) -> SignatureVerdict:
    """Judge one commit's signature against `signers`, with key validity at `verify_time`.

    OpenPGP signatures are checked against `openpgp_keys`; without a keyring they are
    `Unsupported("openpgp")`.
    """
    if signature is None or not signature.strip():
        return Unsigned()
    if signed_payload is None:
        return BadlySigned("signature without signed content")
    head = signature.lstrip()
    if head.startswith(b"-----BEGIN PGP SIGNATURE-----"):
        if not openpgp_keys:
            return Unsupported("openpgp", "no OpenPGP keyring configured")
        return _verify_openpgp(signature, signed_payload, openpgp_keys)
    if head.startswith(b"-----BEGIN SIGNED MESSAGE-----"):
        return Unsupported("x509")
    if not head.startswith(ARMOR_BEGIN):
        return BadlySigned("unrecognised signature format")
    try:
        sig = parse_sshsig(dearmor(signature))
    except SshSigError as exc:
        return BadlySigned(str(exc))
    if sig.key_type.endswith("-cert-v01@openssh.com"):
        return Unsupported("ssh-certificate")
    try:
        verify_sshsig(sig, signed_payload, namespace=GIT_NAMESPACE)
    except UnsupportedKeyType:
        return Unsupported(sig.key_type)
    except SshSigError as exc:
        return BadlySigned(str(exc))

    # The signature is genuine; now: is this key allowed to sign commits at that time?
    entries = signers.for_key(sig.public_key)
    if not entries:
        return UnknownKey(sig.fingerprint)
    reasons: list[str] = []
    for entry in entries:
        if not entry.allows_namespace(GIT_NAMESPACE):
            reasons.append(f"key may not sign in namespace {GIT_NAMESPACE!r} (line {entry.line})")
            continue
        problem = entry.why_not_valid_at(verify_time)
        if problem:
            reasons.append(problem)
            continue
        return Verified(entry.principals[0], sig.fingerprint, entry.principals)
    return NotAllowed("; ".join(reasons), sig.fingerprint)


def _verify_openpgp(signature: bytes, payload: bytes, keyring: OpenPgpKeyring) -> SignatureVerdict:
    try:
        sig = parse_signature(signature)
    except UnsupportedOpenPgp as exc:
        return Unsupported("openpgp", str(exc))
    except OpenPgpError as exc:
        return BadlySigned(str(exc))
    found = keyring.find(sig.issuer_fingerprint, sig.issuer_key_id)
    if found is None:
        return UnknownKey(sig.issuer_fingerprint or sig.issuer_key_id or "no issuer in signature")
    cert, key = found
    try:
        verify_openpgp(sig, payload, key)
    except UnsupportedOpenPgp as exc:
        return Unsupported("openpgp", str(exc))
    except OpenPgpError as exc:
        return BadlySigned(str(exc))
    principals = cert.user_ids or (cert.primary.fingerprint,)
    return Verified(principals[0], key.fingerprint, principals)


class SignatureMode(enum.Enum):
    OFF = "off"  # do not look at signatures
    RECORD = "record"  # verify and record, deploy whatever the verdict
    REQUIRE = "require"  # deploy only Verified commits


@dataclass(frozen=True)
class PolicyDecision:
    verdict: SignatureVerdict | None  # None when the mode is OFF
    deployable: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "deployable": self.deployable,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SignaturePolicy:
    """Whether to check signatures, and the signers to check them against."""

    mode: SignatureMode = SignatureMode.OFF
    signers: AllowedSigners = field(default_factory=AllowedSigners)
    openpgp_keys: OpenPgpKeyring = field(default_factory=OpenPgpKeyring)

    def __post_init__(self) -> None:
        if self.mode is SignatureMode.REQUIRE and not (len(self.signers) or len(self.openpgp_keys)):
            # Requiring signatures from nobody would block every commit; say so up front.
            raise ValueError(
                "signature mode 'require' needs a non-empty allowed-signers file or OpenPGP keyring"
            )

    @classmethod
    def from_file(
        cls,
        mode: SignatureMode | str,
        allowed_signers: Path | None,
        openpgp_keyring: Path | None = None,
    ) -> SignaturePolicy:
        """Edge helper: read the allowed-signers file and/or an armored OpenPGP keyring."""
        mode = SignatureMode(mode)
        signers = (
            parse_allowed_signers(allowed_signers.read_text(encoding="utf-8"))
            if allowed_signers is not None
            else AllowedSigners()
        )
        keyring = (
            parse_keyring(openpgp_keyring.read_bytes())
            if openpgp_keyring is not None
            else OpenPgpKeyring()
        )
        return cls(mode, signers, keyring)

    def decide(
        self, signature: bytes | None, signed_payload: bytes | None, *, verify_time: int
    ) -> PolicyDecision:
        if self.mode is SignatureMode.OFF:
            return PolicyDecision(None, True, "signature checks are off")
        verdict = verify_commit_signature(
            signature,
            signed_payload,
            self.signers,
            verify_time=verify_time,
            openpgp_keys=self.openpgp_keys,
        )
        if self.mode is SignatureMode.RECORD:
            return PolicyDecision(verdict, True, f"recorded ({verdict.kind}); not enforced")
        if isinstance(verdict, Verified):
            return PolicyDecision(verdict, True, f"signed by {verdict.principal}")
        return PolicyDecision(verdict, False, f"signature required: {_describe(verdict)}")

    def decide_commit(self, commit: CommitInfo, *, now: int) -> PolicyDecision:
        """decide() for a CommitInfo seen at `now` (unix seconds).

        Key validity is judged at the later of the committer time and `now`: the committer
        time is whatever the signer wrote, so judging at it alone (as `git verify-commit`
        does) would let a back-dated commit slip past an expired `valid-before`.
        """
        when = max(commit.committer.time, now)
        return self.decide(commit.signature, commit.signed_payload, verify_time=when)


def _describe(verdict: SignatureVerdict) -> str:
    if isinstance(verdict, Unsigned):
        return "the commit is not signed"
    if isinstance(verdict, BadlySigned):
        return f"bad signature: {verdict.reason}"
    if isinstance(verdict, UnknownKey):
        return f"key {verdict.fingerprint} is not in the allowed signers"
    if isinstance(verdict, NotAllowed):
        return f"key {verdict.fingerprint} not allowed: {verdict.reason}"
    if isinstance(verdict, Unsupported):
        extra = f" ({verdict.detail})" if verdict.detail else ""
        return f"cannot verify {verdict.format} signatures{extra}"
    return verdict.kind
