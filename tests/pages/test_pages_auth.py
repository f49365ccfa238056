"""API tokens, sessions and `require(role)` on both backends; the `token` CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi import Depends, FastAPI

from reconciler.auth import ApiTokens, Principal, Role, install, require
from reconciler.auth.token_cli import token

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def tokens(db_url: str):  # type: ignore[no-untyped-def]
    store = ApiTokens.open(db_url)
    yield store
    store.close()


def test_pages_tokens_are_stored_hashed_and_authenticate(tokens: ApiTokens) -> None:
    made = tokens.create("operator", "alice", now=NOW)
    assert made.token.startswith("mat_") and made.token not in repr(made)
    with tokens.engine.connect() as c:
        stored = " ".join(
            str(v) for row in c.execute(sa.text("SELECT * FROM api_tokens")) for v in row
        )
    assert made.token not in stored and made.token[4:] not in stored
    who = tokens.authenticate(made.token)
    assert who == Principal("alice", Role.OPERATOR, made.id)
    for bad in (None, "", made.token + "x", made.token[:-1], "mat_" + "A" * 43, "x" * 5000):
        assert tokens.authenticate(bad) is None
    listed = tokens.list()
    assert [(t.id, t.name, t.role, t.active) for t in listed] == [
        (made.id, "alice", Role.OPERATOR, True)
    ]
    assert tokens.revoke(made.id, now=NOW) and not tokens.revoke(made.id, now=NOW)
    assert tokens.authenticate(made.token) is None
    with pytest.raises(ValueError):
        tokens.create("root", "x", now=NOW)
    with pytest.raises(ValueError):
        tokens.create("viewer", "  ", now=NOW)


def test_pages_sessions_expire_and_end_with_the_token(tokens: ApiTokens) -> None:
    made = tokens.create("viewer", "vic", now=NOW)
    who = tokens.authenticate(made.token)
    assert who is not None
    cookie, session = tokens.start_session(who, now=NOW, ttl=timedelta(hours=1))
    assert tokens.session(cookie, now=NOW + timedelta(minutes=59)) == session
    assert tokens.session(cookie, now=NOW + timedelta(hours=1)) is None
    assert tokens.session(cookie + "x", now=NOW) is None and tokens.session(None, now=NOW) is None
    other, _ = tokens.start_session(who, now=NOW)
    tokens.end_session(other)
    assert tokens.session(other, now=NOW) is None
    again, _ = tokens.start_session(who, now=NOW)
    tokens.revoke(made.id, now=NOW)
    assert tokens.session(again, now=NOW) is None


def test_pages_bootstrap_admin_is_idempotent(tokens: ApiTokens) -> None:
    first = tokens.bootstrap_admin("s3cret-admin-token-from-first-start", now=NOW)
    assert tokens.bootstrap_admin("s3cret-admin-token-from-first-start", now=NOW) == first
    who = tokens.authenticate("s3cret-admin-token-from-first-start")
    assert who is not None and who.role is Role.ADMIN
    tokens.revoke(first, now=NOW)
    tokens.bootstrap_admin("s3cret-admin-token-from-first-start", now=NOW)
    assert tokens.authenticate("s3cret-admin-token-from-first-start") is None  # stays revoked
    with pytest.raises(ValueError):
        tokens.bootstrap_admin("short", now=NOW)


def test_pages_require_role_on_the_json_api(tmp_path: Path) -> None:
    store = ApiTokens.open(f"sqlite:///{tmp_path}/t.db")
    app = FastAPI()
    install(app, store)

    @app.post("/api/rollout/abort")
    def abort(who: Principal = Depends(require(Role.OPERATOR))) -> dict[str, str]:  # noqa: B008
        return {"actor": who.actor}

    viewer = store.create("viewer", "v", now=NOW).token
    operator = store.create("operator", "o", now=NOW)
    import anyio

    async def call(headers: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            return await c.post("/api/rollout/abort", headers=headers)

    assert anyio.run(call, {}).status_code == 401
    assert anyio.run(call, {"Authorization": "Bearer nope"}).status_code == 401
    assert anyio.run(call, {"Authorization": f"Bearer {viewer}"}).status_code == 403
    ok = anyio.run(call, {"Authorization": f"Bearer {operator.token}"})
    assert ok.status_code == 200 and ok.json() == {"actor": f"token:o#{operator.id[:8]}"}
    store.close()


def test_pages_token_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    data_dir = str(tmp_path / "data")
    made = runner.invoke(
        token, ["create", "--role", "operator", "--name", "alice", "--data-dir", data_dir, "--json"]
    )
    assert made.exit_code == 0, made.output
    secret = json.loads(made.output)
    listed = runner.invoke(token, ["list", "--data-dir", data_dir])
    assert (
        "alice" in listed.output
        and "operator" in listed.output
        and secret["token"] not in listed.output
    )
    bad = runner.invoke(token, ["create", "--role", "root", "--name", "x", "--data-dir", data_dir])
    assert bad.exit_code == 2
    assert runner.invoke(token, ["revoke", secret["id"], "--data-dir", data_dir]).exit_code == 0
    assert runner.invoke(token, ["revoke", secret["id"], "--data-dir", data_dir]).exit_code == 1
    store = ApiTokens.open(f"sqlite:///{data_dir}/meshcd.db")
    assert store.authenticate(secret["token"]) is None
    store.close()
