"""API tokens with roles, and the web sessions signed in with them (tables `api_tokens`,
`api_sessions` in the store's database, SQLite or PostgreSQL).

A token is `mat_` + 32 random bytes (url-safe base64), shown once at creation; the table
keeps only its SHA-256, so a copy of the database lets nobody in. Looking a token up by its
digest leaks nothing useful through timing (the digest of a guess is unpredictable), and the
stored digest is then compared in constant time; unknown, malformed and revoked tokens all
take the same path and get the same `None`.

A session is an opaque random id in an HttpOnly cookie; the table keeps its SHA-256, the
token it was signed in with, its CSRF secret and its expiry. Revoking a token ends its
sessions on their next request (every lookup joins the token row).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reconciler.auth.roles import Principal, Role, parse_role
from reconciler.store.engine import open_engine, read_transaction, write_transaction
from reconciler.store.timefmt import format_instant, parse_instant

TOKEN_PREFIX = "mat_"
MAX_TOKEN_CHARS = 256
MAX_NAME_CHARS = 64
DEFAULT_SESSION_TTL = timedelta(hours=8)
# PostgreSQL advisory lock key so replicas starting together create the tables once.
SCHEMA_LOCK_KEY = 0x6D657368_61757468

metadata = sa.MetaData()

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(MAX_NAME_CHARS), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("revoked_at", sa.String(32), nullable=True),
)

api_sessions = sa.Table(
    "api_sessions",
    metadata,
    sa.Column("session_sha256", sa.String(64), primary_key=True),
    sa.Column("token_id", sa.String(32), sa.ForeignKey("api_tokens.id"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("expires_at", sa.String(32), nullable=False),
    sa.Index("ix_api_sessions_expires", "expires_at"),
)
_T = api_tokens
_S = api_sessions


@dataclass(frozen=True, slots=True)
class CreatedToken:
    """A new token. `token` is the secret: show it once; only its hash is stored."""

    id: str
    name: str
    role: Role
    token: str

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"CreatedToken(id={self.id!r}, name={self.name!r}, role={self.role.value!r})"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed: never its secret or its hash."""

    id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: who it is, its CSRF secret, when it ends."""

    principal: Principal
    csrf: str
    expires_at: datetime


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def validate_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ValueError(f"a token name is 1..{MAX_NAME_CHARS} printable characters")
    return name


class ApiTokens:
    """API tokens and web sessions over one engine."""

    def __init__(self, engine: Engine, *, create_schema: bool = True) -> None:
        self.engine = engine
        if create_schema:
            with write_transaction(engine, lock_key=SCHEMA_LOCK_KEY) as connection:
                metadata.create_all(connection, checkfirst=True)

    @classmethod
    def open(cls, url: str) -> ApiTokens:
        return cls(open_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    # -- tokens ----------------------------------------------------------------------------

    def create(self, role: Role | str, name: str, *, now: datetime) -> CreatedToken:
        """A new token with `role`; the returned secret is not stored anywhere."""
        role = role if isinstance(role, Role) else parse_role(role)
        name = validate_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(8)
        self._insert(token_id, name, role, digest(token), now)
        return CreatedToken(token_id, name, role, token)

    def _insert(self, token_id: str, name: str, role: Role, sha: str, now: datetime) -> None:
        with write_transaction(self.engine) as connection:
            connection.execute(
                _T.insert().values(
                    id=token_id,
                    name=name,
                    role=role.value,
                    token_sha256=sha,
                    created_at=format_instant(now),
                )
            )

    def bootstrap_admin(
        self, existing_admin_token: str, *, now: datetime, name: str = "admin"
    ) -> str:
        """Make the controller's first-start admin token the first admin; returns its id.

        Idempotent: a token already known (by its hash) is left as it is, revoked or not,
        so a revoked bootstrap token does not come back at the next start.
        """
        secret = existing_admin_token.strip()
        if len(secret) < 16 or len(secret) > MAX_TOKEN_CHARS:
            raise ValueError("the admin token must be 16..256 characters")
        sha = digest(secret)
        with read_transaction(self.engine) as connection:
            known = connection.execute(sa.select(_T.c.id).where(_T.c.token_sha256 == sha)).scalar()
        if known is not None:
            return str(known)
        # The id derives from the hash so that two replicas bootstrapping at once collide
        # on the primary key instead of making two rows.
        token_id = sha[:16]
        with contextlib.suppress(sa.exc.IntegrityError):
            self._insert(token_id, validate_name(name), Role.ADMIN, sha, now)
        return token_id

    def list(self) -> list[TokenInfo]:
        """Every token, newest first, without secrets."""
        with read_transaction(self.engine) as connection:
            rows = connection.execute(
                sa.select(_T.c.id, _T.c.name, _T.c.role, _T.c.created_at, _T.c.revoked_at).order_by(
                    _T.c.created_at.desc(), _T.c.id
                )
            ).all()
        return [
            TokenInfo(
                r.id,
                r.name,
                Role(r.role),
                parse_instant(r.created_at),
                parse_instant(r.revoked_at) if r.revoked_at else None,
            )
            for r in rows
        ]

    def revoke(self, token_id: str, *, now: datetime) -> bool:
        """Revoke a token (and so its sessions). False if unknown or already revoked."""
        with write_transaction(self.engine) as connection:
            changed = connection.execute(
                _T.update()
                .where(_T.c.id == token_id, _T.c.revoked_at.is_(None))
                .values(revoked_at=format_instant(now))
            )
            connection.execute(_S.delete().where(_S.c.token_id == token_id))
        return changed.rowcount == 1

    def authenticate(self, bearer: str | None) -> Principal | None:
        """The principal of an active token, or None (unknown, malformed or revoked)."""
        candidate = (bearer or "").strip()
        if len(candidate) > MAX_TOKEN_CHARS:
            candidate = ""
        # Hash even the empty string: every refusal costs the same as a lookup.
        sha = digest(candidate)
        with read_transaction(self.engine) as connection:
            row = connection.execute(
                sa.select(_T.c.id, _T.c.name, _T.c.role, _T.c.token_sha256, _T.c.revoked_at).where(
                    _T.c.token_sha256 == sha
                )
            ).first()
        stored = row.token_sha256 if row is not None else "0" * 64
        same = hmac.compare_digest(stored.encode(), sha.encode())
        if row is None or not same or not candidate or row.revoked_at is not None:
            return None
        return Principal(row.name, Role(row.role), row.id)

    # -- sessions --------------------------------------------------------------------------

    def start_session(
        self, principal: Principal, *, now: datetime, ttl: timedelta = DEFAULT_SESSION_TTL
    ) -> tuple[str, Session]:
        """A new session for `principal`: (cookie value, session). Expired ones are purged."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = format_instant(now + ttl)
        with write_transaction(self.engine) as connection:
            connection.execute(_S.delete().where(_S.c.expires_at <= format_instant(now)))
            connection.execute(
                _S.insert().values(
                    session_sha256=digest(session_id),
                    token_id=principal.token_id,
                    csrf=csrf,
                    created_at=format_instant(now),
                    expires_at=expires,
                )
            )
        return session_id, Session(principal, csrf, parse_instant(expires))

    def session(self, session_id: str | None, *, now: datetime) -> Session | None:
        """The live session behind a cookie value, or None (unknown, expired, token revoked)."""
        if not session_id or len(session_id) > MAX_TOKEN_CHARS:
            return None
        with read_transaction(self.engine) as connection:
            row = connection.execute(
                sa.select(_S.c.csrf, _S.c.expires_at, _T.c.id, _T.c.name, _T.c.role)
                .select_from(_S.join(_T, _S.c.token_id == _T.c.id))
                .where(
                    _S.c.session_sha256 == digest(session_id),
                    _S.c.expires_at > format_instant(now),
                    _T.c.revoked_at.is_(None),
                )
            ).first()
        if row is None:
            return None
        return Session(
            Principal(row.name, Role(row.role), row.id), row.csrf, parse_instant(row.expires_at)
        )

    def end_session(self, session_id: str) -> None:
        with write_transaction(self.engine) as connection:
            connection.execute(_S.delete().where(_S.c.session_sha256 == digest(session_id)))
