from __future__ import annotations

import base64

import pytest

from reconciler.source import AllowedSignersError, parse_allowed_signers
from reconciler.source.allowed_signers import parse_time
from reconciler.source.sshsig import fingerprint, ssh_string

ED_BLOB = ssh_string(b"ssh-ed25519") + ssh_string(bytes(range(32)))
ED = "ssh-ed25519 " + base64.b64encode(ED_BLOB).decode()
RSA_BLOB = (
    ssh_string(b"ssh-rsa") + ssh_string(b"\x01\x00\x01") + ssh_string(b"\x00" + b"\xff" * 256)
)
RSA = "ssh-rsa " + base64.b64encode(RSA_BLOB).decode()


def test_full_file() -> None:
    text = f"""
# platform team
alice@example.com,bob@example.com {ED} alice laptop
   ci@example.com namespaces="git,file",valid-after="20240101",valid-before="20300101120000Z" {RSA}
"ops team@example.com" cert-authority {ED}
"""
    entries = parse_allowed_signers(text).entries
    assert len(entries) == 3
    a, ci, ca = entries
    assert a.principals == ("alice@example.com", "bob@example.com")
    assert (a.key_type, a.public_key, a.comment, a.line) == (
        "ssh-ed25519",
        ED_BLOB,
        "alice laptop",
        3,
    )
    assert a.namespaces is None and a.valid_after is None and not a.cert_authority
    assert a.fingerprint == fingerprint(ED_BLOB) and a.fingerprint.startswith("SHA256:")
    assert ci.namespaces == ("git", "file")
    assert ci.valid_after == 1704067200 and ci.valid_before == 1893499200
    assert ci.public_key == RSA_BLOB and ci.line == 4
    assert ca.principals == ("ops team@example.com",) and ca.cert_authority
    # CA lines never match a plain key: certificates are not supported.
    assert parse_allowed_signers(text).for_key(ED_BLOB) == (a,)


def test_validity_checks() -> None:
    (e,) = parse_allowed_signers(f'x valid-after="20240101",valid-before="20250101" {ED}').entries
    assert e.why_not_valid_at(1704067200) is None  # the valid-after instant itself
    assert e.why_not_valid_at(1704067199) == "key not valid before 2024-01-01T00:00:00Z (line 1)"
    assert e.why_not_valid_at(1735689600) is None
    assert "expired at 2025-01-01T00:00:00Z" in (e.why_not_valid_at(1735689601) or "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240229", 1709164800),
        ("202402291230", 1709209800),
        ("20240229123059Z", 1709209859),
        ("20240229z", 1709164800),
    ],
)
def test_times(value: str, expected: int) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (f"alice {ED.split()[0]}", "expected: principals"),
        ("alice ssh-ed25519 !!!notbase64!!!", "not valid base64"),
        (f"alice ssh-rsa {ED.split()[1]}", "key says it is 'ssh-ed25519'"),
        (f"alice frobnicate {ED}", "unknown option(s): frobnicate"),
        (f"alice namespaces=git {ED}", "needs a quoted value"),
        (f'alice namespaces="" {ED}', "namespaces needs a value"),
        (f'alice valid-before="2024-01-01" {ED}', "expected YYYYMMDD"),
        (f'alice valid-before="20240230" {ED}', "not a real date"),
        (f"alice valid-before {ED}", "valid-before needs a value"),
        (f'alice cert-authority="yes" {ED}', "takes no value"),
        (f'alice namespaces="git" {ED} trailing "quote', "unterminated quote"),
        (f'alice namespaces="git",namespaces="file" {ED}', "given twice"),
        (f", {ED}", "no principal"),
        ("alice opts ssh-ed25519", "missing key type or key"),
    ],
)
def test_bad_lines_name_the_line(line: str, fragment: str) -> None:
    with pytest.raises(AllowedSignersError) as err:
        parse_allowed_signers(f"# header\n{line}\n")
    assert "line 2" in str(err.value)
    assert fragment in str(err.value)
