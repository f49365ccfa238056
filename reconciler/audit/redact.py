"""Blanking secrets out of audit data before it is hashed and stored.

What a caller records is its own business, but a token or password pasted into an audit
record can never be taken out again (removing it would break the chain). So `append`
redacts by default: the value of any key that names a secret is replaced by `REDACTED`,
at any depth.

A key names a secret when one of its words (split on `_`, `-`, `.`, spaces and camelCase)
is a secret word (`secret`, `token`, `password`, `key`, ...), unless its last word says it
is only *about* the secret (`token_id`, `key_file`, `password_set`, `secret_sha256`): ids,
hashes, fingerprints, paths, counts and times are what an audit needs to say which secret
was involved without holding it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

REDACTED = "[REDACTED]"

SECRET_WORDS = frozenset(
    {
        "secret",
        "token",
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "key",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "privatekey",
        "bearer",
    }
)
# A last word that describes a secret rather than holding it.
ABOUT_WORDS = frozenset(
    {
        "id",
        "ids",
        "hash",
        "sha256",
        "digest",
        "fingerprint",
        "file",
        "path",
        "name",
        "type",
        "kind",
        "count",
        "ttl",
        "expires",
        "expiry",
        "at",
        "set",
        "present",
        "valid",
        "result",
        "status",
        "len",
        "length",
        "ref",
        "source",
    }
)

_WORD = re.compile(r"[A-Z]+[0-9]*(?![a-z])|[A-Z]?[a-z]+[0-9]*|[0-9]+")


def key_words(key: str) -> list[str]:
    """`"apiKey_ID"` -> `["api", "key", "id"]`."""
    return [w.lower() for w in _WORD.findall(key)]


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    words = key_words(key)
    # "password2" is still a password.
    if not words or not any(w.rstrip("0123456789") in SECRET_WORDS for w in words):
        return False
    return words[-1] not in ABOUT_WORDS


def redact_secrets(data: Any) -> Any:
    """A copy of `data` with the values of secret-named keys replaced by `REDACTED`.

    Walks nested objects and arrays; leaves everything else as it is.
    """
    if isinstance(data, dict):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) else redact_secrets(v)
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact_secrets(v) for v in data]
    return data
