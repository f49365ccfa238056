"""One canonical key per repository, whatever URL form names it.

    https://GitHub.com/Owner/Repo.git/      ─┐
    http://github.com:80/owner/repo          │
    ssh://git@github.com:22/owner/repo.git   ├─► "github.com/owner/repo"
    git@github.com:owner/repo.git            │
    git://github.com/owner/repo              ─┘
    file:///srv/git/config.git, /srv/git/config.git  ─► "file:/srv/git/config"

Choices (documented in docs/webhooks.md):
- scheme, user info, port, query and fragment never identify a repository and are dropped.
  Ports are dropped even when non-default, because the same repository is served over ssh on
  one port (Bitbucket Data Center's 7999, a GitLab's 2222) and https on another.
- host is always case-folded. The path is case-folded too by default, because GitHub,
  GitLab, Gitea/Forgejo and Bitbucket all look owner/repo up case-insensitively and refuse
  two repositories that differ only in case. Pass `fold_path_case=False` for a plain git
  server on a case-sensitive file system. Local paths (file:) keep their case.
- a trailing "/" and then a trailing ".git" are removed; empty segments and "." are dropped;
  ".." is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from webhooks.model import RefUpdate

_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^@/:\[\]]+):(?P<path>.*)$")
_HOST_OK = re.compile(r"^[a-z0-9._\-]+$|^\[[0-9a-f:.]+\]$")
_NETWORK_SCHEMES = {"http", "https", "ssh", "git", "git+ssh", "ssh+git"}


class InvalidRepoUrl(ValueError):
    pass


def _clean_path(path: str, fold_case: bool) -> str:
    segments = [seg for seg in unquote(path).split("/") if seg not in ("", ".")]
    if not segments:
        raise InvalidRepoUrl("URL names no repository path")
    if ".." in segments or any(ch.isspace() or not ch.isprintable() for ch in "".join(segments)):
        raise InvalidRepoUrl("URL path has '..', spaces or control characters")
    last = segments[-1]
    if last.lower().endswith(".git"):
        last = last[:-4]
        if not last:
            raise InvalidRepoUrl("URL path ends in a bare '.git'")
        segments[-1] = last
    joined = "/".join(segments)
    return joined.lower() if fold_case else joined


def _clean_host(host: str) -> str:
    host = host.lower().rstrip(".")
    if not host or not _HOST_OK.match(host):
        raise InvalidRepoUrl(f"bad host {host[:64]!r}")
    return host


def canonical_repo_key(url: str, *, fold_path_case: bool = True) -> str:
    """`host/owner/repo` (or `file:/path` for local repositories); raises InvalidRepoUrl."""
    url = url.strip()
    if not url or len(url) > 2048:
        raise InvalidRepoUrl("empty or overlong URL")
    if url.startswith("/"):
        return "file:/" + _clean_path(url, fold_case=False)
    if "://" in url:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as err:
            raise InvalidRepoUrl(str(err)) from None
        scheme = parts.scheme.lower()
        if scheme == "file":
            return "file:/" + _clean_path(parts.path, fold_case=False)
        if scheme not in _NETWORK_SCHEMES:
            raise InvalidRepoUrl(f"unsupported scheme {scheme[:16]!r}")
        if ":" in host:  # urlsplit strips the brackets of an IPv6 literal; keep them
            host = f"[{host}]"
        return f"{_clean_host(host)}/{_clean_path(parts.path, fold_path_case)}"
    match = _SCP_LIKE.match(url)
    if match is None:
        raise InvalidRepoUrl("not a URL, an scp-like address or an absolute path")
    return f"{_clean_host(match['host'])}/{_clean_path(match['path'], fold_path_case)}"


@lru_cache(maxsize=4096)  # forges repeat the same few URLs in every delivery
def try_key(url: str, *, fold_path_case: bool = True) -> str | None:
    try:
        return canonical_repo_key(url, fold_path_case=fold_path_case)
    except InvalidRepoUrl:
        return None


def any_matches(urls: Iterable[str], watched_key: str, *, fold_path_case: bool = True) -> bool:
    return any(try_key(url, fold_path_case=fold_path_case) == watched_key for url in urls)


def project_matches(
    project: tuple[str, str], watched_key: str, *, fold_path_case: bool = True
) -> bool:
    """Bitbucket Data Center names a repository by project key and slug when its payload has no
    links. The watched URL is `<base>/scm/<key>/<slug>.git` (https, `<base>` may carry a context
    path) or `ssh://git@host:7999/<key>/<slug>.git`: its key ends in `key/slug`, right after
    the host or after a `scm` segment. The host cannot be compared: the payload does not name it
    (the delivery's signature says it comes from the forge holding the secret). Bitbucket looks
    keys and slugs up case-insensitively, so they are compared so whatever `fold_path_case`."""
    del fold_path_case  # same signature as any_matches; Bitbucket paths are never case-sensitive
    if watched_key.startswith("file:"):
        return False
    _host, _, path = watched_key.partition("/")
    segments = path.lower().split("/")
    if len(segments) < 2 or segments[-2:] != [project[0].lower(), project[1].lower()]:
        return False
    return len(segments) == 2 or segments[-3] == "scm"


def matches_repo(update: RefUpdate, watched_url: str, *, fold_path_case: bool = True) -> bool:
    """Does any URL the delivery names designate the watched repository?

    URLs in the payload that cannot be normalised simply do not match."""
    watched = canonical_repo_key(watched_url, fold_path_case=fold_path_case)
    return any_matches(update.repo_urls, watched, fold_path_case=fold_path_case)
