"""The local bare mirror of the config repo: fetch, resolve a branch, read a commit.

This is the I/O edge of the source. It never decides anything: classifying what a fetch
means for the watched branch lives in `changes`, the signature verdict in `signature_policy`.

The mirror keeps `refs/heads/*` exactly as the remote has them (`+refs/heads/*:refs/heads/*`
with pruning): a force-push overwrites a branch, a deleted branch disappears. Objects are
never pruned by us, so a commit that was force-pushed away can still be read and compared.
Commit ids cross this API as 40-hex strings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pygit2
from pygit2.enums import CredentialType, FetchPrune

from .credentials import REDACTED, Credentials, NoCredentials
from .errors import (
    AuthFailed,
    BranchMissing,
    CommitNotFound,
    FetchFailed,
    MirrorError,
    RemoteUnreachable,
    RepositoryNotFound,
    SourceConfigError,
    SourceError,
)
from .model import HEADS, CommitInfo, FetchResult, Person, RefUpdate
from .remote_url import RemoteUrl, parse_remote_url

REMOTE_NAME = "origin"
MIRROR_REFSPEC = "+refs/heads/*:refs/heads/*"
# libgit2 calls the credentials callback again after each rejection; stop it looping.
MAX_CREDENTIAL_ATTEMPTS = 3


def branch_ref(branch: str) -> str:
    """`main` or `refs/heads/main` -> `refs/heads/main`; SourceConfigError if not a valid name."""
    ref = branch if branch.startswith(HEADS) else HEADS + branch
    if ref == HEADS or not pygit2.reference_is_valid_name(ref):
        raise SourceConfigError(f"not a valid branch name: {branch!r}")
    return ref


class GitMirror:
    """A bare mirror at `path` of the repo at `url`, created on first use.

    Thread-safe: fetches run on their own repository handle (so reads do not wait on the
    network), reads share one handle behind a lock. Only one fetch should run at a time;
    `FetchCoordinator` guarantees that, and a lock here makes it true regardless.
    """

    def __init__(
        self,
        path: Path | str,
        url: str | RemoteUrl,
        credentials: Credentials | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        connect_timeout: float | None = 10.0,
        io_timeout: float | None = 120.0,
        proxy: str | Literal[True] | None = None,
    ) -> None:
        """Open (or create) the mirror; nothing is fetched yet.

        `connect_timeout` / `io_timeout` (seconds) bound a fetch against a remote that
        accepts and then says nothing; they are libgit2 process-wide settings, so the last
        mirror created sets them (meshcd has one). None leaves libgit2's setting alone.
        `proxy`: None for a direct connection, True to use the environment's proxy
        settings, or a proxy URL. `environ` replaces os.environ for token/passphrase lookup.
        """
        self.path = Path(path)
        self.remote = url if isinstance(url, RemoteUrl) else parse_remote_url(url)
        self.credentials = credentials or NoCredentials()
        self.credentials.check_remote(self.remote)
        self._environ = environ
        self._proxy = proxy
        set_network_timeouts(connect_timeout, io_timeout)
        self._read_lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._repo = self._open_or_init()

    def __repr__(self) -> str:
        return f"GitMirror(path={str(self.path)!r}, url={self.remote.display!r}, credentials={self.credentials!r})"

    @property
    def repository(self) -> pygit2.Repository:
        """The underlying repository, for readers of trees and blobs (the Load stage).

        Shared with this mirror's reads, which lock around it; a reader on another
        thread should use `open_repository()` instead.
        """
        return self._repo

    @property
    def environ(self) -> Mapping[str, str] | None:
        """The environment tokens and passphrases are read from (None: os.environ)."""
        return self._environ

    @property
    def proxy(self) -> str | Literal[True] | None:
        """The proxy setting every network operation on this mirror uses."""
        return self._proxy

    def open_repository(self) -> pygit2.Repository:
        """A fresh handle on the mirror, for one thread's exclusive use (e.g. the loader)."""
        try:
            return pygit2.Repository(str(self.path))
        except pygit2.GitError as exc:
            raise MirrorError(f"cannot open the mirror at {self.path}: {exc}") from None

    # -- setup -------------------------------------------------------------------------

    def _open_or_init(self) -> pygit2.Repository:
        try:
            if self.path.exists() and any(self.path.iterdir()):
                repo = pygit2.Repository(str(self.path))
                if not repo.is_bare:
                    raise MirrorError(
                        f"{self.path} is a repository with a work tree, not a bare mirror"
                    )
            else:
                repo = pygit2.init_repository(str(self.path), bare=True)
        except pygit2.GitError as exc:
            raise MirrorError(f"cannot open or create the mirror at {self.path}: {exc}") from None
        except OSError as exc:
            raise MirrorError(
                f"cannot open or create the mirror at {self.path}: {exc.strerror}"
            ) from None
        self._configure_remote(repo)
        return repo

    def _configure_remote(self, repo: pygit2.Repository) -> None:
        # The config may have changed since the mirror was made: keep the remote in step.
        # Never delete the remote: libgit2 would delete the refs its refspec maps to,
        # which for a mirror is every branch.
        existing = next((r for r in repo.remotes if r.name == REMOTE_NAME), None)
        if existing is None:
            repo.remotes.create(REMOTE_NAME, self.remote.url, MIRROR_REFSPEC)
            return
        if existing.url != self.remote.url:
            repo.remotes.set_url(REMOTE_NAME, self.remote.url)
        if list(existing.fetch_refspecs) != [MIRROR_REFSPEC]:
            key = f"remote.{REMOTE_NAME}.fetch"
            repo.config.delete_multivar(key, ".*")
            repo.config[key] = MIRROR_REFSPEC

    # -- fetch -------------------------------------------------------------------------

    def fetch(self) -> FetchResult:
        """Bring the mirror's branches in line with the remote; say which ones moved.

        Raises a SourceError subclass; the message never holds a credential.
        """
        with self.exclusive() as repo:
            return self.fetch_into(repo)

    @contextmanager
    def exclusive(self) -> Iterator[pygit2.Repository]:
        """Hold the fetch lock and a fresh repository handle for the duration.

        For a writer that must not interleave with a fetch: the revert push fetches,
        checks, pushes and moves the mirror's branch in one go.
        """
        with self._fetch_lock:
            repo = self.open_repository()
            try:
                yield repo
            finally:
                repo.free()  # release its files now, not when the GC gets to it

    def fetch_into(self, repo: pygit2.Repository) -> FetchResult:
        """fetch() on a handle from `exclusive()`; only call it inside that block."""
        before = _heads(repo)
        callbacks = MirrorCallbacks(self.credentials, self._environ)
        try:
            progress = repo.remotes[REMOTE_NAME].fetch(
                callbacks=callbacks, prune=FetchPrune.PRUNE, proxy=self._proxy
            )
        except SourceError as exc:  # raised by our credentials callback
            raise type(exc)(self._scrub(str(exc))) from None
        except (pygit2.GitError, KeyError, OSError, ValueError) as exc:
            raise classify_git_error(str(exc), self.remote, self.secrets()) from None
        after = _heads(repo)
        updates = tuple(
            RefUpdate(name, before.get(name), after.get(name))
            for name in sorted(before.keys() | after.keys())
            if before.get(name) != after.get(name)
        )
        return FetchResult(self.remote.display, updates, int(progress.received_objects))

    def secrets(self) -> list[str]:
        """The secret values the credentials hold now, for scrubbing any text shown."""
        return self.credentials.secrets(self._environ)

    def _scrub(self, text: str) -> str:
        return scrub(text, self.secrets())

    # -- reads -------------------------------------------------------------------------

    def branches(self) -> dict[str, str]:
        """Every branch in the mirror: short name -> commit id."""
        with self._read_lock:
            return {name.removeprefix(HEADS): oid for name, oid in _heads(self._repo).items()}

    def resolve(self, branch: str) -> str | None:
        """The commit id `branch` points at in the mirror, or None if there is no such branch."""
        ref = branch_ref(branch)
        with self._read_lock:
            reference = self._repo.references.get(ref)
            if reference is None:
                return None
            try:
                return str(reference.peel(pygit2.Commit).id)
            except (pygit2.GitError, ValueError, KeyError):
                return None  # dangling or not a commit: as good as missing

    def require(self, branch: str) -> str:
        """Like resolve(), but raise BranchMissing instead of returning None."""
        oid = self.resolve(branch)
        if oid is None:
            raise BranchMissing(
                f"branch {branch_ref(branch).removeprefix(HEADS)!r} is not in {self.remote.display}"
            )
        return oid

    def commit_info(self, oid: str) -> CommitInfo:
        """Metadata, signature and signed payload of commit `oid` (40 hex)."""
        with self._read_lock:
            commit = self._commit(oid)
            signature, payload = commit.gpg_signature
            return CommitInfo(
                id=str(commit.id),
                tree=str(commit.tree_id),
                author=_person(commit.author),
                committer=_person(commit.committer),
                message=commit.raw_message.decode("utf-8", "replace"),
                parents=tuple(str(p) for p in commit.parent_ids),
                signature=signature,
                signed_payload=payload,
            )

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True if `ancestor` is reachable from `descendant` (or equal to it).

        A commit the mirror has never seen (say, recorded before the mirror was recreated)
        counts as not an ancestor, so the change reads as a force-push: the safe reading.
        """
        if ancestor == descendant:
            return True
        with self._read_lock:
            try:
                return bool(self._repo.descendant_of(descendant, ancestor))
            except (pygit2.GitError, ValueError, KeyError):
                return False

    def _commit(self, oid: str) -> pygit2.Commit:
        try:
            obj = self._repo.get(oid)
        except (ValueError, TypeError):
            raise CommitNotFound(f"not a commit id: {oid!r}") from None
        if not isinstance(obj, pygit2.Commit):
            raise CommitNotFound(f"no commit {oid} in the mirror")
        return obj


def set_network_timeouts(connect: float | None, io: float | None) -> None:
    """Set libgit2's (process-wide) server connect and read/write timeouts, in seconds."""
    if connect is not None:
        if connect <= 0:
            raise SourceConfigError("connect timeout must be positive")
        pygit2.settings.server_connect_timeout = int(connect * 1000)
    if io is not None:
        if io <= 0:
            raise SourceConfigError("io timeout must be positive")
        pygit2.settings.server_timeout = int(io * 1000)


class MirrorCallbacks(pygit2.RemoteCallbacks):
    """Hands libgit2 the mirror's credentials, giving up after a few rejections."""

    def __init__(self, credentials: Credentials, environ: Mapping[str, str] | None) -> None:
        super().__init__()
        self._credentials_source = credentials
        self._environ = environ
        self._attempts = 0

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.Username | pygit2.UserPass | pygit2.Keypair:
        self._attempts += 1
        if self._attempts > MAX_CREDENTIAL_ATTEMPTS:
            raise AuthFailed("the remote rejected the configured credentials")
        return self._credentials_source.libgit2_credential(
            username_from_url, allowed_types, self._environ
        )


def _heads(repo: pygit2.Repository) -> dict[str, str]:
    heads: dict[str, str] = {}
    for name in repo.references:
        if name.startswith(HEADS):
            target = repo.references[name].target
            if isinstance(target, pygit2.Oid):
                heads[name] = str(target)
    return heads


def _person(sig: pygit2.Signature) -> Person:
    return Person(
        name=sig.raw_name.decode("utf-8", "replace"),
        email=sig.raw_email.decode("utf-8", "replace"),
        time=int(sig.time),
        offset_minutes=int(sig.offset),
    )


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every secret in `text` with a redaction mark."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


# libgit2 reports failures as text; these fragments say which kind (lower-cased).
_UNREACHABLE = (
    "failed to connect",
    "connection refused",
    "connection reset",
    "timed out",
    "timeout",
    "could not resolve",
    "name or service not known",
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "ssl",
    "tls",
    "certificate",
    "handshake",
    "unexpected eof",
    "early eof",
    "broken pipe",
    "failed to send request",
)
_AUTH = (
    "authentication",
    "auth required",
    "unauthorized",
    "401",
    "403",
    "permission denied",
    "credentials",
    "publickey",
    "too many redirects or authentication replays",
)
_NOT_FOUND = (
    "could not find repository",
    "failed to resolve path",
    "repository not found",
    "404",
    "not found",
    "does not appear to be a git repository",
    "not a git repository",
)


def classify_git_error(message: str, remote: RemoteUrl, secrets: list[str]) -> SourceError:
    """Turn libgit2's message into the matching SourceError, scrubbed of secrets."""
    text = scrub(message, secrets)
    lower = text.lower()
    where = remote.display
    if any(k in lower for k in _AUTH):
        return AuthFailed(f"{where}: authentication failed: {text}")
    if any(k in lower for k in _NOT_FOUND):
        return RepositoryNotFound(f"{where}: no repository there: {text}")
    if any(k in lower for k in _UNREACHABLE):
        return RemoteUnreachable(f"{where}: unreachable: {text}")
    return FetchFailed(f"{where}: fetch failed: {text}")
