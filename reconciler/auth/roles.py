"""Roles and what each may do. Pure.

Three roles, each including the one before: a viewer reads everything but secrets, an
operator also acts on rollouts (promote, pause, resume, abort, rollback), an admin also
manages API tokens.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
ROLES: tuple[str, ...] = tuple(r.value for r in Role)


def parse_role(text: str) -> Role:
    """The role named `text` (case-insensitive); ValueError for anything else."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise ValueError(f"unknown role {text!r} (one of {', '.join(ROLES)})") from None


def allows(have: Role, need: Role) -> bool:
    """Does a principal with role `have` pass a check that needs `need`?"""
    return _RANK[have] >= _RANK[need]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name, its role and its id (never the secret)."""

    name: str
    role: Role
    token_id: str

    @property
    def actor(self) -> str:
        """The audit `actor` for things this principal does."""
        return f"token:{self.name}#{self.token_id[:8]}"

    def can(self, need: Role) -> bool:
        return allows(self.role, need)

    @property
    def can_act(self) -> bool:
        return self.can(Role.OPERATOR)

    @property
    def can_admin(self) -> bool:
        return self.can(Role.ADMIN)
