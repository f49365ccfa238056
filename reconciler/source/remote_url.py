"""Remote URL forms the mirror accepts, normalised for libgit2 and safe to display.

Accepted:
  /abs/path/repo.git, ./rel/path, file:///abs/path   -> local (file://)
  https://host/org/repo.git                          -> https (token credentials)
  http://host/org/repo.git                           -> http (no credentials allowed)
  ssh://[user@]host[:port]/path, user@host:path      -> ssh (key credentials)

A password or token inside the URL is refused: it would end up in logs, error messages and
the mirror's config file. Put it in a file or an environment variable instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from .errors import SourceConfigError

Scheme = Literal["file", "http", "https", "ssh"]

# git's scp-like syntax: [user@]host:path, where host has no slash and path does not start
# with "//" (that would be a URL).
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>(?!//).+)$")


@dataclass(frozen=True)
class RemoteUrl:
    """A parsed remote: `url` goes to libgit2, `display` into logs and messages."""

    scheme: Scheme
    url: str
    username: str | None = None

    @property
    def display(self) -> str:
        return self.url  # never holds a secret: parse() refuses URLs with a password

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def __str__(self) -> str:
        return self.display


def parse_remote_url(text: str, *, base_dir: Path | None = None) -> RemoteUrl:
    """Parse and normalise `text`; raise SourceConfigError for anything we will not use.

    A relative local path is resolved against `base_dir` (default: the current directory).
    """
    text = text.strip()
    if not text:
        raise SourceConfigError("remote URL is empty")
    if any(ch in text for ch in "\n\r\0"):
        raise SourceConfigError("remote URL contains control characters")

    if "://" in text:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise SourceConfigError(f"file URL with a host is not supported: {text!r}")
            return _local(Path(unquote(parts.path)), base_dir)
        if scheme not in ("http", "https", "ssh"):
            raise SourceConfigError(f"unsupported URL scheme {scheme!r} (use https, ssh or file)")
        if parts.password is not None:
            raise SourceConfigError(
                "remote URL contains a password or token; put it in a token file or an "
                "environment variable instead"
            )
        if not parts.hostname:
            raise SourceConfigError(f"remote URL has no host: {_strip_userinfo(text)!r}")
        if not parts.path or parts.path == "/":
            raise SourceConfigError(f"remote URL has no repository path: {text!r}")
        return RemoteUrl(scheme, text, parts.username)  # type: ignore[arg-type]

    scp = _SCP_LIKE.match(text)
    # "C:\..." style drive letters are paths, not hosts; so is anything starting with . or /
    if scp and len(scp["host"]) > 1 and not text.startswith((".", "/")):
        # libgit2 understands the scp-like form itself; keep it (its path is relative to
        # the remote user's home, which an ssh:// rewrite would change).
        return RemoteUrl("ssh", text, scp["user"])
    return _local(Path(text), base_dir)


def _local(path: Path, base_dir: Path | None) -> RemoteUrl:
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    resolved = path.resolve()
    return RemoteUrl("file", resolved.as_uri())


def _strip_userinfo(text: str) -> str:
    parts = urlsplit(text)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()
