"""Which keys count as secrets."""

from __future__ import annotations

import pytest

from reconciler.audit import REDACTED, is_secret_key, redact_secrets


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "TOKEN",
        "secret",
        "client_secret",
        "password",
        "db-password",
        "dbPassword",
        "password2",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "private_key_pem",
        "Authorization",
        "bearer",
        "cookie",
        "credentials",
        "passphrase",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "token_id",
        "tokenId",
        "key_file",
        "secret_sha256",
        "password_set",
        "token_expires",
        "monkey",
        "keyboard",
        "tokens_issued",
        "commit",
        "author",
        "signature",
        "",
        "_",
    ],
)
def test_keys_that_are_not_secrets(key: str) -> None:
    assert not is_secret_key(key)


def test_redaction_walks_nested_structures_and_keeps_the_rest() -> None:
    data = {"a": [{"password": "p", "ok": 1}, [{"secret": {"deep": 1}}]], "b": {"c": "keep"}}
    assert redact_secrets(data) == {
        "a": [{"password": REDACTED, "ok": 1}, [{"secret": REDACTED}]],
        "b": {"c": "keep"},
    }
    assert data["a"][0]["password"] == "p"  # the input is not modified
