"""API tokens with roles (viewer < operator < admin), web sessions and CSRF checks.

    tokens = ApiTokens.open(url)                 # tables api_tokens, api_sessions
    made = tokens.create("operator", "alice", now=now)   # made.token: show once
    tokens.authenticate(bearer) -> Principal | None
    @app.post("/api/rollout/abort")
    def abort(who: Principal = Depends(require(Role.OPERATOR))): ...

See docs/pages.md.
"""

from __future__ import annotations

from reconciler.auth.csrf import CSRF_FIELD, CSRF_HEADER, csrf_matches
from reconciler.auth.deps import bearer_of, install, require
from reconciler.auth.roles import ROLES, Principal, Role, allows, parse_role
from reconciler.auth.tokens import (
    DEFAULT_SESSION_TTL,
    TOKEN_PREFIX,
    ApiTokens,
    CreatedToken,
    Session,
    TokenInfo,
)

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "DEFAULT_SESSION_TTL",
    "ROLES",
    "TOKEN_PREFIX",
    "ApiTokens",
    "CreatedToken",
    "Principal",
    "Role",
    "Session",
    "TokenInfo",
    "allows",
    "bearer_of",
    "csrf_matches",
    "install",
    "parse_role",
    "require",
]
