"""The Git source: a bare mirror of the config repo, and what its branch did.

Start here:
  mirror = GitMirror(data_dir / "mirror.git", url, credentials_from_settings(cfg))
  coordinator = FetchCoordinator(mirror.fetch, on_outcome=...)
  PollingSchedule(coordinator.poll, interval=60).start()
  coordinator.refresh("webhook")            # from any thread; coalesced
  observe_branch(mirror, "main", previous, policy, now=int(time.time()))
  push_revert(mirror, "main", expected_head=..., target_commit=..., message=...)  # rollback --revert

See docs/source.md for URL forms, credentials, scheduling and the signature policy.
"""

from __future__ import annotations

from .allowed_signers import (
    AllowedSigner,
    AllowedSigners,
    AllowedSignersError,
    parse_allowed_signers,
)
from .backoff import BackoffPolicy, FetchStatus, backoff_delay
from .changes import (
    BranchDeleted,
    BranchRecreated,
    BranchWatch,
    ChangeEvent,
    ForcePush,
    NewCommit,
    Unchanged,
    classify_change,
)
from .coordinator import CoordinatorClosed, FetchCoordinator, FetchOutcome
from .credentials import (
    Credentials,
    HttpsToken,
    NoCredentials,
    Secret,
    SecretRef,
    SshKey,
    credentials_from_settings,
)
from .errors import (
    AuthFailed,
    BranchMissing,
    CommitNotFound,
    CredentialsUnavailable,
    FetchFailed,
    MirrorError,
    RemoteUnreachable,
    RepositoryNotFound,
    SourceConfigError,
    SourceError,
)
from .mirror import GitMirror, branch_ref
from .model import CommitInfo, FetchResult, Person, RefUpdate
from .openpgp import OpenPgpError, OpenPgpKeyring, parse_keyring
from .remote_url import RemoteUrl, parse_remote_url
from .revert import (
    BranchMoved,
    NothingToRevert,
    PushFailed,
    PushRejected,
    RevertRefused,
    RevertResult,
    push_revert,
)
from .schedule import PollingSchedule
from .signature_policy import (
    BadlySigned,
    NotAllowed,
    PolicyDecision,
    SignatureMode,
    SignaturePolicy,
    SignatureVerdict,
    UnknownKey,
    Unsigned,
    Unsupported,
    Verified,
    verify_commit_signature,
)
from .tree import GitTreeSource
from .watch import BranchObservation, observe_branch

__all__ = [
    "AllowedSigner",
    "AllowedSigners",
    "AllowedSignersError",
    "AuthFailed",
    "BackoffPolicy",
    "BadlySigned",
    "BranchDeleted",
    "BranchMissing",
    "BranchMoved",
    "BranchObservation",
    "BranchRecreated",
    "BranchWatch",
    "ChangeEvent",
    "CommitInfo",
    "CommitNotFound",
    "CoordinatorClosed",
    "Credentials",
    "CredentialsUnavailable",
    "FetchCoordinator",
    "FetchFailed",
    "FetchOutcome",
    "FetchResult",
    "FetchStatus",
    "ForcePush",
    "GitMirror",
    "GitTreeSource",
    "HttpsToken",
    "MirrorError",
    "NewCommit",
    "NoCredentials",
    "NotAllowed",
    "NothingToRevert",
    "OpenPgpError",
    "OpenPgpKeyring",
    "Person",
    "PolicyDecision",
    "PollingSchedule",
    "PushFailed",
    "PushRejected",
    "RefUpdate",
    "RemoteUnreachable",
    "RemoteUrl",
    "RepositoryNotFound",
    "RevertRefused",
    "RevertResult",
    "Secret",
    "SecretRef",
    "SignatureMode",
    "SignaturePolicy",
    "SignatureVerdict",
    "SourceConfigError",
    "SourceError",
    "SshKey",
    "Unchanged",
    "UnknownKey",
    "Unsigned",
    "Unsupported",
    "Verified",
    "backoff_delay",
    "branch_ref",
    "classify_change",
    "credentials_from_settings",
    "observe_branch",
    "parse_allowed_signers",
    "parse_keyring",
    "parse_remote_url",
    "push_revert",
    "verify_commit_signature",
]
