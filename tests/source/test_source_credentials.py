from __future__ import annotations

import pickle
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import CredentialType

from reconciler.source import (
    AuthFailed,
    CredentialsUnavailable,
    HttpsToken,
    NoCredentials,
    Secret,
    SecretRef,
    SourceConfigError,
    SshKey,
    credentials_from_settings,
    parse_remote_url,
)

TOKEN = "ghp_TESTTOKEN0123456789"


def test_secret_never_prints_itself() -> None:
    s = Secret(TOKEN)
    assert s.reveal() == TOKEN
    for text in (repr(s), str(s), f"{s}", f"{s!r}", repr([s]), repr({"t": s})):
        assert TOKEN not in text
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_token_from_file_is_stripped(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert SecretRef(file=f).load().reveal() == TOKEN


def test_token_from_env() -> None:
    assert SecretRef(env="MESHCD_T").load({"MESHCD_T": f"  {TOKEN} "}).reveal() == TOKEN


@pytest.mark.parametrize(
    ("ref", "env", "fragment"),
    [
        (SecretRef(env="MESHCD_T"), {}, "empty or unset"),
        (SecretRef(env="MESHCD_T"), {"MESHCD_T": "  "}, "empty or unset"),
        (SecretRef(env="MESHCD_T"), {"MESHCD_T": "a\nb"}, "more than one line"),
    ],
)
def test_env_secret_problems(ref: SecretRef, env: dict[str, str], fragment: str) -> None:
    with pytest.raises(CredentialsUnavailable, match=fragment):
        ref.load(env)


def test_missing_and_empty_token_files(tmp_path: Path) -> None:
    with pytest.raises(CredentialsUnavailable, match="cannot read secret file"):
        SecretRef(file=tmp_path / "nope").load()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CredentialsUnavailable, match="empty"):
        SecretRef(file=tmp_path / "empty").load()


def test_secret_ref_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError):
        SecretRef()
    with pytest.raises(SourceConfigError):
        SecretRef(file=tmp_path / "t", env="X")


def test_https_token_builds_userpass_and_hides_token(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN)
    creds = HttpsToken(SecretRef(file=f))
    cred = creds.libgit2_credential(None, CredentialType.USERPASS_PLAINTEXT)
    assert isinstance(cred, pygit2.UserPass)
    assert cred.credential_tuple == ("x-access-token", TOKEN)
    # The URL's user name wins over the default.
    assert creds.libgit2_credential(
        "deploy", CredentialType.USERPASS_PLAINTEXT
    ).credential_tuple == (
        "deploy",
        TOKEN,
    )
    assert TOKEN not in repr(creds) and TOKEN not in str(creds)
    assert creds.secrets() == [TOKEN]


def test_token_rotation_is_read_at_use(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("old-token")
    creds = HttpsToken(SecretRef(file=f))
    f.write_text("new-token")
    assert (
        creds.libgit2_credential(None, CredentialType.USERPASS_PLAINTEXT).credential_tuple[1]
        == "new-token"
    )


def test_token_refused_when_remote_wants_a_key(tmp_path: Path) -> None:
    creds = HttpsToken(SecretRef(env="T"))
    with pytest.raises(AuthFailed, match="does not accept a token"):
        creds.libgit2_credential(None, CredentialType.SSH_KEY, {"T": TOKEN})


def test_token_only_over_https() -> None:
    creds = HttpsToken(SecretRef(env="T"))
    creds.check_remote(parse_remote_url("https://h/o/r.git"))
    for url in ("http://h/o/r.git", "ssh://git@h/o/r.git", "/srv/r.git"):
        with pytest.raises(SourceConfigError, match="only sent over https"):
            creds.check_remote(parse_remote_url(url))


def test_ssh_key_builds_keypair(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key, libgit2 reads it later")
    (tmp_path / "pass").write_text("hunter2")
    creds = SshKey(key, passphrase=SecretRef(file=tmp_path / "pass"))
    cred = creds.libgit2_credential("deploy", CredentialType.SSH_KEY)
    assert isinstance(cred, pygit2.Keypair)
    assert cred.credential_tuple == ("deploy", None, str(key), "hunter2")
    # libgit2 may first ask only for a user name.
    name = creds.libgit2_credential(None, CredentialType.USERNAME)
    assert isinstance(name, pygit2.Username) and name.credential_tuple == ("git",)
    assert "hunter2" not in repr(creds)
    with pytest.raises(SourceConfigError, match="only used with ssh"):
        creds.check_remote(parse_remote_url("https://h/o/r.git"))


def test_ssh_key_file_missing(tmp_path: Path) -> None:
    creds = SshKey(tmp_path / "missing_key")
    with pytest.raises(CredentialsUnavailable, match="cannot read ssh key file"):
        creds.libgit2_credential(None, CredentialType.SSH_KEY)


def test_no_credentials_cannot_answer_a_challenge() -> None:
    with pytest.raises(AuthFailed, match="none are configured"):
        NoCredentials().libgit2_credential(None, CredentialType.USERPASS_PLAINTEXT)


def test_credentials_from_settings(tmp_path: Path) -> None:
    assert credentials_from_settings({}) == NoCredentials()
    tok = credentials_from_settings({"token_file": "tok", "username": "oauth2"}, base_dir=tmp_path)
    assert tok == HttpsToken(SecretRef(file=tmp_path / "tok"), "oauth2")
    assert credentials_from_settings({"token_env": "GIT_TOKEN"}) == HttpsToken(
        SecretRef(env="GIT_TOKEN")
    )
    key = credentials_from_settings(
        {"ssh_key": "/k/id", "ssh_passphrase_env": "PP"}, base_dir=tmp_path
    )
    assert key == SshKey(Path("/k/id"), None, SecretRef(env="PP"), "git")


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"token": "inline"}, "unknown credential settings: token"),
        ({"token_env": "T", "ssh_key": "/k"}, "not both"),
        ({"token_env": "T", "token_file": "/t"}, "exactly one"),
        ({"ssh_passphrase_env": "PP"}, "need ssh_key"),
    ],
)
def test_bad_credential_settings(settings: dict[str, str], fragment: str) -> None:
    with pytest.raises(SourceConfigError, match=fragment):
        credentials_from_settings(settings)
