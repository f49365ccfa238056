"""Receiver settings, checked when they are built (not when the first delivery arrives).

Secrets come from files or environment variables, never from the command line (where `ps`
shows them). A forge without a secret is refused outright (fail closed)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from webhooks.adapters import FORGES
from webhooks.repo_url import InvalidRepoUrl, canonical_repo_key

MIB = 1024 * 1024
DEFAULT_MAX_BODY = 1 * MIB
HARD_MAX_BODY = 25 * MIB  # GitHub's own cap on a delivery
DEFAULT_BODY_TIMEOUT_S = 10.0
DEFAULT_DEDUP_CAPACITY = 10_000


class ReceiverSettingsError(ValueError):
    """Receiver settings that cannot be used (the message names the setting)."""


def _strip_newline(raw: bytes) -> bytes:
    # `echo secret > file` adds a newline that is not part of the secret the forge uses.
    return raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw


def secret_from_file(path: str | Path) -> bytes:
    try:
        secret = _strip_newline(Path(path).read_bytes())
    except OSError as err:
        raise ReceiverSettingsError(f"cannot read secret file {path}: {err.strerror}") from None
    if not secret:
        raise ReceiverSettingsError(f"secret file {path} is empty")
    return secret


def secret_from_env(name: str, environ: Mapping[str, str] | None = None) -> bytes:
    env = os.environ if environ is None else environ
    value = env.get(name)
    if not value:
        raise ReceiverSettingsError(f"environment variable {name} is unset or empty")
    return value.encode("utf-8")


def load_secret(source: str, environ: Mapping[str, str] | None = None) -> bytes:
    """`file:/path/to/secret` or `env:VARIABLE_NAME`."""
    kind, sep, where = source.partition(":")
    if sep and kind == "file":
        return secret_from_file(where)
    if sep and kind == "env":
        return secret_from_env(where, environ)
    raise ReceiverSettingsError(f"secret source must be file:PATH or env:NAME, not {source[:40]!r}")


@dataclass(frozen=True)
class ReceiverSettings:
    """What the receiver needs. `secrets` maps forge name -> secret bytes."""

    watched_repo: str
    watched_branch: str
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    max_body_bytes: int = DEFAULT_MAX_BODY
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    dedup_capacity: int = DEFAULT_DEDUP_CAPACITY
    fold_path_case: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.max_body_bytes <= HARD_MAX_BODY:
            raise ReceiverSettingsError(
                f"max_body_bytes must be between 1 and {HARD_MAX_BODY} (25 MiB), "
                f"not {self.max_body_bytes}"
            )
        if not 0 < self.body_timeout_s <= 300:
            raise ReceiverSettingsError("body_timeout_s must be in (0, 300] seconds")
        if self.dedup_capacity < 1:
            raise ReceiverSettingsError("dedup_capacity must be at least 1")
        unknown = set(self.secrets) - set(FORGES)
        if unknown:
            raise ReceiverSettingsError(f"secrets for unknown forges: {', '.join(sorted(unknown))}")
        empty = [forge for forge, secret in self.secrets.items() if not secret]
        if empty:
            raise ReceiverSettingsError(f"empty secret for: {', '.join(sorted(empty))}")
        branch = self.watched_branch.removeprefix("refs/heads/")
        if not branch or branch != branch.strip():
            raise ReceiverSettingsError("watched_branch must be a branch name like 'main'")
        object.__setattr__(self, "watched_branch", branch)
        try:
            canonical_repo_key(self.watched_repo, fold_path_case=self.fold_path_case)
        except InvalidRepoUrl as err:
            raise ReceiverSettingsError(f"watched_repo {self.watched_repo[:80]!r}: {err}") from None

    @property
    def watched_key(self) -> str:
        return canonical_repo_key(self.watched_repo, fold_path_case=self.fold_path_case)

    @property
    def watched_ref(self) -> str:
        return "refs/heads/" + self.watched_branch

    @classmethod
    def from_sources(
        cls,
        *,
        watched_repo: str,
        watched_branch: str,
        secret_sources: Mapping[str, str],
        environ: Mapping[str, str] | None = None,
        **options: float | int | bool,
    ) -> ReceiverSettings:
        """Build from `{"github": "file:/etc/meshcd/github.secret", "gitlab": "env:GL"}`."""
        secrets = {forge: load_secret(src, environ) for forge, src in secret_sources.items()}
        return cls(
            watched_repo=watched_repo,
            watched_branch=watched_branch,
            secrets=secrets,
            **options,  # type: ignore[arg-type]
        )
