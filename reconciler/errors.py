"""The controller's one exception tree.

Every error meshcd's controller raises on purpose derives from `MeshcdError`. Callers catch at
the level they care about, and read one flag to decide whether to retry:

    MeshcdError                     temporary: may retrying help?
    ├── NotFound                    a named thing does not exist (also a LookupError)
    │   └── RollbackTargetNotFound  `meshcd rollback --to N`: no revision N (also RollbackRefused)
    ├── Conflict                    the request is valid but the current state refuses it
    │   └── RollbackRefused         nothing changed (controller)
    ├── ConfigError                 settings or a config repo that cannot be used as given
    │   ├── SettingsError           the controller's settings      (controller.settings)
    │   ├── ConfigReadError         a config source cannot be read (language.sources)
    │   └── AllowedSignersError     an allowed-signers file        (source.allowed_signers)
    ├── StartupError                the controller cannot start (one line says what to do)
    ├── SourceError                 the Git source                 (source.errors)
    │   ├── SourceConfigError
    │   │   └── CredentialsUnavailable
    │   ├── RemoteUnreachable       temporary
    │   ├── AuthFailed
    │   ├── RepositoryNotFound
    │   ├── FetchFailed             temporary
    │   ├── BranchMissing           temporary
    │   ├── CommitNotFound          also NotFound
    │   ├── MirrorError
    │   ├── RevertRefused           (source.revert) BranchMoved, PushRejected, NothingToRevert
    │   ├── PushFailed              temporary (source.revert)
    │   ├── CoordinatorClosed       refresh() after close() (source.coordinator)
    │   ├── SshSigError             (source.sshsig) └── UnsupportedKeyType
    │   └── OpenPgpError            (source.openpgp) └── UnsupportedOpenPgp
    ├── StoreError                  the database                   (store.errors)
    │   ├── StoreUnavailable        temporary
    │   ├── SchemaMismatch
    │   └── AuditError              the audit log                  (audit.errors)
    │       ├── InvalidRecord       └── RecordTooLarge
    │       ├── RecordNotFound      also NotFound
    │       ├── AppendConflict      temporary
    │       └── ChainBroken
    ├── CAError                     the certificate authority      (ca.errors)
    │   ├── CAConfigError, InvalidSpiffeId, CSRRejected, SVIDRejected
    │   └── TokenError              └── TokenRefused, TokenNotFound (also NotFound)
    ├── IllegalTransition           a revision status move the life cycle forbids (revisions.model)
    ├── BadWindow                   a stats window without the agent's shape (analysis.sample)
    ├── PrometheusError             Prometheus refused the query   (analysis.prometheus)
    │   └── PrometheusUnreachable   temporary
    └── Refused                     a fleet stream ended with an error message (fleet.stream)

Lower-level errors (sqlalchemy, pygit2, OSError) are wrapped at the shell that met them, with
the original kept as `__cause__`. Exactly one place maps this tree to HTTP status codes
(`reconciler.controller.http_errors`); domain errors carry no status of their own.

`webhooks` and `proxy_runtime` may not import `reconciler`: they keep their own roots
(`webhooks.errors.Rejection`, `proxy_runtime.errors.ProxyRuntimeError`) with the same
`temporary` flag.
"""

from __future__ import annotations

from typing import ClassVar


class MeshcdError(Exception):
    """Root of every error the controller raises on purpose."""

    temporary: ClassVar[bool] = False


class NotFound(MeshcdError, LookupError):
    """A named thing does not exist (a revision, a proxy, a token, an audit record)."""


class Conflict(MeshcdError):
    """The request is well-formed, but the current state refuses it."""


class RollbackRefused(Conflict):
    """A rollback cannot be done now (no such revision, one is already running, ...)."""


class ConfigError(MeshcdError, ValueError):
    """Settings or input that cannot be used as given; the message says what to change."""


class StartupError(MeshcdError):
    """The controller cannot start; the message is one line saying what is wrong and what to do."""


class RollbackTargetNotFound(NotFound, RollbackRefused):
    """A rollback to a revision that does not exist: a `NotFound` (404) and a refusal."""
