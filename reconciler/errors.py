"""The controller's one exception tree.

Every error meshcd's controller raises on purpose derives from `MeshcdError`. Callers catch at
the level they care about, and read one flag to decide whether to retry:

    MeshcdError                 temporary: may retrying help?
    ├── NotFound                a named thing (revision, proxy, token, record) does not exist
    ├── Conflict                the request is valid but the current state refuses it
    │   └── RollbackRefused
    ├── ConfigError             settings or a config repo that cannot be used as given
    ├── StartupError            the controller cannot start (one line says what to do)
    ├── SourceError             the Git source            (reconciler.source.errors)
    ├── StoreError              the database              (reconciler.store.errors)
    │   └── AuditError          the audit log             (reconciler.audit.errors)
    └── CAError                 the certificate authority (reconciler.ca.errors)

Lower-level errors (sqlalchemy, pygit2, OSError) are wrapped at the shell that met them, with
the original kept as `__cause__`. Exactly one place maps this tree to HTTP status codes (the
API's exception handler); domain errors carry no status of their own.

`webhooks` and `proxy_runtime` may not import `reconciler`: they keep their own roots
(`webhooks.errors.Rejection`, `proxy_runtime.agent.errors.AgentError`) with the same
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
