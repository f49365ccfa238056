"""Signature checks. All comparisons are constant-time (`hmac.compare_digest`) so the time
an answer takes reveals nothing about how much of a signature was right."""

from __future__ import annotations

import hashlib
import hmac
import re

from webhooks.errors import BadSignature, MissingSignature, UnsupportedAlgorithm
from webhooks.headers import Headers

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def hmac_sha256_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _check_hex(claimed: str, secret: bytes, body: bytes) -> None:
    # Shape first (cheap, reveals nothing secret), then the constant-time compare.
    if not _HEX64.fullmatch(claimed):
        raise BadSignature("signature is not 64 hex digits")
    expected = hmac_sha256_hex(secret, body)
    if not hmac.compare_digest(expected.encode("ascii"), claimed.lower().encode("ascii")):
        raise BadSignature("signature does not match the body")


def verify_prefixed(headers: Headers, name: str, secret: bytes, body: bytes) -> None:
    """`<name>: sha256=<hex HMAC-SHA256 of the raw body>`; any other algorithm is refused."""
    value = headers.get(name)
    if value is None or not value.strip():
        raise MissingSignature(f"header {name} is missing")
    algorithm, sep, digest = value.strip().partition("=")
    if not sep or algorithm.strip().lower() != "sha256":
        shown = algorithm.strip()[:16] if sep else "none"
        raise UnsupportedAlgorithm(f"{name} must be sha256=<hex>; got algorithm {shown!r}")
    _check_hex(digest.strip(), secret, body)


def verify_bare_hex(headers: Headers, names: tuple[str, ...], secret: bytes, body: bytes) -> None:
    """Gitea/Forgejo style: the header is the bare hex HMAC-SHA256 (no prefix)."""
    value = headers.first(*names)
    if value is None:
        raise MissingSignature(f"header {names[0]} is missing")
    _check_hex(value, secret, body)


def verify_token(headers: Headers, name: str, secret: bytes) -> None:
    """GitLab style: the header holds the shared secret itself (no HMAC over the body)."""
    value = headers.get(name)
    if value is None or value == "":
        raise MissingSignature(f"header {name} is missing")
    try:
        # Servers hand header bytes over decoded as latin-1; this recovers them exactly.
        claimed = value.encode("latin-1")
    except UnicodeEncodeError:
        claimed = value.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(claimed, secret):
        raise BadSignature("token does not match")
