"""Single-use join tokens: how a new proxy proves it may get an SVID for a service.

`meshcd proxy token create --service web` makes one; the proxy sends it with its CSR to the
bootstrap endpoint, which redeems it. A token is 32 random bytes (url-safe base64, prefixed
`mjt_` so secret scanners can spot it), shown once at creation. The table keeps only its
SHA-256, so a copy of the database lets nobody join. Redeeming is one conditional UPDATE
(`... WHERE used_at IS NULL AND not expired AND service matches`): of two concurrent
redeems, the database lets exactly one change the row, and the other is refused as `used`.
A refused attempt does not consume the token (a typo in the service name should not burn it).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reconciler.ca.errors import RefusalReason, TokenNotFound, TokenRefused
from reconciler.ca.spiffe import validate_name
from reconciler.store.engine import open_engine, read_transaction, write_transaction
from reconciler.store.timefmt import format_instant, parse_instant

DEFAULT_TOKEN_TTL = timedelta(minutes=15)
MAX_TOKEN_TTL = timedelta(days=7)
TOKEN_PREFIX = "mjt_"
_MAX_TOKEN_CHARS = 256
_MAX_NAME_CHARS = 253

# PostgreSQL advisory lock key so replicas starting together create the table once.
SCHEMA_LOCK_KEY = 0x6D657368_746F6B6E

TokenState = Literal["active", "used", "expired", "revoked"]

metadata = sa.MetaData()

join_tokens = sa.Table(
    "join_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("service", sa.String(_MAX_NAME_CHARS), nullable=False),
    sa.Column("namespace", sa.String(_MAX_NAME_CHARS), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("expires_at", sa.String(32), nullable=False),
    sa.Column("used_at", sa.String(32), nullable=True),
    sa.Column("revoked_at", sa.String(32), nullable=True),
)
_T = join_tokens


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token. `token` is the secret: show it once, it is not stored."""

    id: str
    token: str
    service: str
    namespace: str
    expires_at: datetime

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return (
            f"IssuedToken(id={self.id!r}, service={self.service!r}, "
            f"namespace={self.namespace!r}, expires_at={self.expires_at.isoformat()!r})"
        )


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What is known about a token, without its secret."""

    id: str
    service: str
    namespace: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> TokenState:
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        return "active"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class JoinTokens:
    """Join tokens in the store's database (table `join_tokens`)."""

    def __init__(self, engine: Engine, *, create_schema: bool = True) -> None:
        self.engine = engine
        if create_schema:
            with write_transaction(engine, lock_key=SCHEMA_LOCK_KEY) as connection:
                metadata.create_all(connection, checkfirst=True)

    @classmethod
    def open(cls, url: str) -> JoinTokens:
        return cls(open_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    def create(
        self,
        service: str,
        namespace: str = "default",
        *,
        now: datetime,
        ttl: timedelta = DEFAULT_TOKEN_TTL,
    ) -> IssuedToken:
        """Make a single-use token for `service` in `namespace`, valid for `ttl`.

        Names must be lowercase DNS-style (they become the SVID's SPIFFE ID path); bad
        names raise `InvalidSpiffeId`, a bad ttl `ValueError`.
        """
        validate_name("service", service)
        validate_name("namespace", namespace)
        if not timedelta(seconds=1) <= ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"ttl must be between 1 second and {MAX_TOKEN_TTL}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(8)
        created = format_instant(now)
        expires = format_instant(now + ttl)
        with write_transaction(self.engine) as connection:
            connection.execute(
                _T.insert().values(
                    id=token_id,
                    token_sha256=token_hash(token),
                    service=service,
                    namespace=namespace,
                    created_at=created,
                    expires_at=expires,
                )
            )
        return IssuedToken(token_id, token, service, namespace, parse_instant(expires))

    def redeem(
        self, token: str, service: str, namespace: str = "default", *, now: datetime
    ) -> TokenInfo:
        """Use the token for `service`/`namespace` at `now`: it works once, then never again.

        Returns the token's info on success. Raises `TokenRefused` with reason `unknown`,
        `used`, `revoked`, `expired` or `wrong_service` (checked in that order).
        """
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise TokenRefused("unknown")
        digest = token_hash(token)
        at = format_instant(now)
        with write_transaction(self.engine) as connection:
            claimed = connection.execute(
                _T.update()
                .where(
                    _T.c.token_sha256 == digest,
                    _T.c.used_at.is_(None),
                    _T.c.revoked_at.is_(None),
                    _T.c.expires_at > at,
                    _T.c.service == service,
                    _T.c.namespace == namespace,
                )
                .values(used_at=at)
            )
            row = connection.execute(sa.select(_T).where(_T.c.token_sha256 == digest)).first()
        if row is None:
            raise TokenRefused("unknown")
        info = _info(row)
        if claimed.rowcount == 1:
            return info
        raise TokenRefused(_refusal(info, service, namespace, now), info.id)

    def get(self, token_id: str) -> TokenInfo:
        with read_transaction(self.engine) as connection:
            row = connection.execute(sa.select(_T).where(_T.c.id == token_id)).first()
        if row is None:
            raise TokenNotFound(token_id)
        return _info(row)

    def list(self) -> list[TokenInfo]:
        """Every token, newest first, without secrets (only ids)."""
        with read_transaction(self.engine) as connection:
            rows = connection.execute(sa.select(_T).order_by(_T.c.created_at.desc(), _T.c.id)).all()
        return [_info(row) for row in rows]

    def revoke(self, token_id: str, *, now: datetime) -> bool:
        """Make an unused token unusable. False if it was already used or revoked."""
        at = format_instant(now)
        with write_transaction(self.engine) as connection:
            changed = connection.execute(
                _T.update()
                .where(_T.c.id == token_id, _T.c.used_at.is_(None), _T.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            if changed.rowcount == 1:
                return True
            exists = connection.execute(sa.select(_T.c.id).where(_T.c.id == token_id)).first()
        if exists is None:
            raise TokenNotFound(token_id)
        return False

    def purge(self, *, before: datetime) -> int:
        """Delete tokens that expired before `before` (used or not). Returns how many."""
        with write_transaction(self.engine) as connection:
            result = connection.execute(_T.delete().where(_T.c.expires_at < format_instant(before)))
        return int(result.rowcount)


def _refusal(info: TokenInfo, service: str, namespace: str, now: datetime) -> RefusalReason:
    state = info.state(now)
    if state != "active":
        return state
    if (info.service, info.namespace) != (service, namespace):
        return "wrong_service"
    # Active and matching, yet not claimed: it was used (or revoked) by a concurrent call
    # between our UPDATE and SELECT. Both are read in one transaction, so this means used.
    return "used"


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=str(row.id),
        service=str(row.service),
        namespace=str(row.namespace),
        created_at=parse_instant(row.created_at),
        expires_at=parse_instant(row.expires_at),
        used_at=parse_instant(row.used_at) if row.used_at else None,
        revoked_at=parse_instant(row.revoked_at) if row.revoked_at else None,
    )
