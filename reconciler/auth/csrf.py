"""CSRF tokens bound to a session. Pure (randomness and time come in from the caller).

A session gets a random CSRF secret when it is created; every form of that session carries
it, and every POST must send it back. The check is constant-time and refuses an absent,
empty or over-long value, so a cross-site form (which cannot read the page) cannot post.
"""

from __future__ import annotations

import hmac

MAX_CSRF_CHARS = 128
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def csrf_matches(expected: str, submitted: str | None) -> bool:
    """True only when `submitted` is exactly the session's CSRF token."""
    if not expected or not submitted or len(submitted) > MAX_CSRF_CHARS:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), submitted.encode("utf-8"))
