"""FastAPI dependencies for the JSON API: `require(Role.OPERATOR)` and friends.

The app keeps its `ApiTokens` at `app.state.api_tokens` (set by `install(app, tokens)`).
A request authenticates with `Authorization: Bearer <token>`; a missing or bad token gets
401 with `WWW-Authenticate: Bearer`, a good token with too small a role gets 403.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request

from reconciler.auth.roles import Principal, Role, allows
from reconciler.auth.tokens import ApiTokens


def install(app: FastAPI, tokens: ApiTokens) -> None:
    app.state.api_tokens = tokens


def bearer_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require(role: Role | str) -> Callable[[Request], Principal]:
    """A dependency that returns the calling `Principal` if it holds at least `role`."""
    need = role if isinstance(role, Role) else Role(role)

    def dependency(request: Request) -> Principal:
        tokens: ApiTokens = request.app.state.api_tokens
        principal = tokens.authenticate(bearer_of(request))
        if principal is None:
            raise HTTPException(
                401, "a valid API token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not allows(principal.role, need):
            raise HTTPException(403, f"this needs the {need.value} role")
        return principal

    dependency.__name__ = f"require_{need.value}"
    return dependency
