"""The errors the Git source raises, each saying whether retrying can help.

`temporary` is the one thing a caller needs to decide: a temporary error (the remote is
down, a branch is not there yet) may go away on its own, so the poller backs off and tries
again; a permanent one (wrong credentials, a URL that names no repository, a malformed
config) needs a person. The poller still retries permanent errors at its capped delay, so
fixing a token file is picked up without a restart.

Messages never contain a credential: they are built from the remote's display URL (no
user-info) and scrubbed of every secret the credentials hold.
"""

from __future__ import annotations

from reconciler.errors import MeshcdError, NotFound


class SourceError(MeshcdError):
    """Base class: something went wrong talking to, or reading from, the config repo."""


class SourceConfigError(SourceError):
    """The source is configured wrongly (bad URL, bad branch name, unusable credentials)."""


class CredentialsUnavailable(SourceConfigError):
    """A token or key file is missing, unreadable or empty, or the env var is unset."""


class RemoteUnreachable(SourceError):
    """The remote could not be reached (refused, timed out, DNS, TLS handshake)."""

    temporary = True


class AuthFailed(SourceError):
    """The remote refused our credentials (or asked for some we do not have)."""


class RepositoryNotFound(SourceError):
    """The remote answered, but there is no repository at that URL or path."""


class FetchFailed(SourceError):
    """Any other fetch failure; assumed temporary so the poller keeps trying."""

    temporary = True


class BranchMissing(SourceError):
    """The watched branch does not exist in the mirror (yet, or any more)."""

    temporary = True


class CommitNotFound(SourceError, NotFound):
    """An object id that is not a commit in the mirror."""


class MirrorError(SourceError):
    """The local mirror on disk cannot be created or opened."""
