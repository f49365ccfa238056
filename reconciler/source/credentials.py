"""Credentials for the remote: none, an https token, or an ssh key.

Secrets are read when a fetch needs them, from a file or an environment variable, so a
rotated token file is picked up on the next fetch without a restart. They live in `Secret`
objects whose repr and str are redacted, and `secrets()` lists them so the mirror can scrub
any error text that might echo one back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
from pygit2.enums import CredentialType

from .errors import AuthFailed, CredentialsUnavailable, SourceConfigError
from .remote_url import RemoteUrl

REDACTED = "***"


class Secret:
    """A string that never prints itself. Call `reveal()` at the single place it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __reduce__(self) -> Any:  # pickling would write the secret somewhere; refuse
        raise TypeError("Secret cannot be pickled")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives: a file (first line, stripped) or an environment variable name."""

    file: Path | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise SourceConfigError("a secret comes from exactly one of a file or an env var")

    def load(self, environ: Mapping[str, str] | None = None) -> Secret:
        if self.file is not None:
            try:
                text = self.file.read_text(encoding="utf-8")
            except OSError as exc:
                raise CredentialsUnavailable(
                    f"cannot read secret file {self.file}: {exc.strerror or type(exc).__name__}"
                ) from None
            value = text.strip()
            where = f"secret file {self.file}"
        else:
            assert self.env is not None
            value = (os.environ if environ is None else environ).get(self.env, "").strip()
            where = f"environment variable {self.env}"
        if not value:
            raise CredentialsUnavailable(f"{where} is empty or unset")
        if "\n" in value:
            raise CredentialsUnavailable(f"{where} holds more than one line")
        return Secret(value)


class Credentials:
    """Base class. Subclasses turn themselves into a libgit2 credential on request."""

    def check_remote(self, remote: RemoteUrl) -> None:
        """Raise SourceConfigError if these credentials cannot be used with `remote`."""

    def libgit2_credential(
        self,
        username_from_url: str | None,
        allowed: CredentialType,
        environ: Mapping[str, str] | None = None,
    ) -> pygit2.Username | pygit2.UserPass | pygit2.Keypair:
        raise AuthFailed("the remote asks for credentials and none are configured")

    def secrets(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """The secret strings these credentials hold, for scrubbing messages (best effort)."""
        return []


@dataclass(frozen=True)
class NoCredentials(Credentials):
    """Anonymous access: local paths and public https repos. (No ssh agent is consulted.)"""


@dataclass(frozen=True)
class HttpsToken(Credentials):
    """A personal-access or deploy token sent as the https password.

    `username`: forges accept anything non-empty with a token (GitHub: x-access-token,
    GitLab: oauth2 or the token name, Gitea: the user name).
    """

    token: SecretRef
    username: str = "x-access-token"

    def check_remote(self, remote: RemoteUrl) -> None:
        if remote.scheme != "https":
            raise SourceConfigError(
                f"a token is only sent over https, not {remote.scheme} ({remote.display})"
            )

    def libgit2_credential(
        self,
        username_from_url: str | None,
        allowed: CredentialType,
        environ: Mapping[str, str] | None = None,
    ) -> pygit2.UserPass:
        if not allowed & CredentialType.USERPASS_PLAINTEXT:
            raise AuthFailed(f"the remote does not accept a token (it offers {allowed!r})")
        return pygit2.UserPass(
            username_from_url or self.username, self.token.load(environ).reveal()
        )

    def secrets(self, environ: Mapping[str, str] | None = None) -> list[str]:
        try:
            return [self.token.load(environ).reveal()]
        except CredentialsUnavailable:
            return []


@dataclass(frozen=True)
class SshKey(Credentials):
    """An ssh private key file (and optionally its .pub and a passphrase)."""

    private_key: Path
    public_key: Path | None = None
    passphrase: SecretRef | None = None
    username: str = "git"

    def check_remote(self, remote: RemoteUrl) -> None:
        if remote.scheme != "ssh":
            raise SourceConfigError(
                f"an ssh key is only used with ssh remotes, not {remote.scheme} ({remote.display})"
            )

    def libgit2_credential(
        self,
        username_from_url: str | None,
        allowed: CredentialType,
        environ: Mapping[str, str] | None = None,
    ) -> pygit2.Username | pygit2.Keypair:
        user = username_from_url or self.username
        if allowed & CredentialType.USERNAME and not allowed & CredentialType.SSH_KEY:
            return pygit2.Username(user)
        if not allowed & CredentialType.SSH_KEY:
            raise AuthFailed(f"the remote does not accept an ssh key (it offers {allowed!r})")
        for path in (self.private_key, self.public_key):
            if path is not None and not os.access(path, os.R_OK):
                raise CredentialsUnavailable(f"cannot read ssh key file {path}")
        passphrase = self.passphrase.load(environ).reveal() if self.passphrase else ""
        return pygit2.Keypair(
            user,
            str(self.public_key) if self.public_key else None,
            str(self.private_key),
            passphrase,
        )

    def secrets(self, environ: Mapping[str, str] | None = None) -> list[str]:
        if self.passphrase is None:
            return []
        try:
            return [self.passphrase.load(environ).reveal()]
        except CredentialsUnavailable:
            return []


def credentials_from_settings(
    settings: Mapping[str, Any], *, base_dir: Path | None = None
) -> Credentials:
    """Build credentials from a settings mapping (the YAML `source:` section, say).

    Keys: `token_file` | `token_env` [+ `username`] for https; `ssh_key` [+ `ssh_public_key`,
    `ssh_passphrase_file` | `ssh_passphrase_env`, `username`] for ssh; nothing for anonymous.
    Relative paths are resolved against `base_dir`.
    """

    def path(key: str) -> Path | None:
        raw = settings.get(key)
        if raw is None:
            return None
        p = Path(str(raw)).expanduser()
        return p if p.is_absolute() or base_dir is None else base_dir / p

    known = {
        "token_file",
        "token_env",
        "username",
        "ssh_key",
        "ssh_public_key",
        "ssh_passphrase_file",
        "ssh_passphrase_env",
    }
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SourceConfigError(f"unknown credential settings: {', '.join(unknown)}")
    token_file, token_env = path("token_file"), settings.get("token_env")
    ssh_key = path("ssh_key")
    if (token_file or token_env) and ssh_key:
        raise SourceConfigError("configure either a token or an ssh key, not both")
    if token_file or token_env:
        ref = SecretRef(file=token_file, env=str(token_env) if token_env else None)
        return HttpsToken(ref, str(settings.get("username") or "x-access-token"))
    if ssh_key:
        pf, pe = path("ssh_passphrase_file"), settings.get("ssh_passphrase_env")
        passphrase = SecretRef(file=pf, env=str(pe) if pe else None) if (pf or pe) else None
        return SshKey(
            ssh_key, path("ssh_public_key"), passphrase, str(settings.get("username") or "git")
        )
    if any(k in settings for k in ("ssh_public_key", "ssh_passphrase_file", "ssh_passphrase_env")):
        raise SourceConfigError("ssh_public_key / ssh_passphrase_* need ssh_key")
    return NoCredentials()
