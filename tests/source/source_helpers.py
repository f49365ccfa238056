"""Real git repos for the source tests, made with the git CLI (the product uses pygit2).

A uniquely named module rather than conftest.py, so `from source_helpers import ...` cannot
pick up another folder's conftest.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path


def _git_env(home: Path) -> dict[str, str]:
    # An empty HOME and no system config: the developer's git config must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Ada Author",
        GIT_AUTHOR_EMAIL="ada@example.com",
        GIT_COMMITTER_NAME="Carl Committer",
        GIT_COMMITTER_EMAIL="carl@example.com",
    )
    return env


class Upstream:
    """A normal (non-bare) repo standing in for the forge's copy of the config repo."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.env = _git_env(home)
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=self.path, env=self.env, check=True, capture_output=True, text=True
        )
        return out.stdout.strip()

    def commit(self, message: str, files: dict[str, str] | None = None, *extra: str) -> str:
        for name, text in (files or {f"{len(message)}-{abs(hash(message))}.yaml": message}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            self.git("add", name)
        self.git("commit", "-q", "-m", message, *extra)
        return self.git("rev-parse", "HEAD")

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref)


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
