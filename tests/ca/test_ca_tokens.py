"""Join tokens on SQLite and PostgreSQL: single use, expiry, wrong service, races, no plaintext."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from reconciler.ca import InvalidSpiffeId, JoinTokens, TokenNotFound, TokenRefused
from reconciler.store import open_engine


@pytest.fixture
def tokens(db_url: str) -> Iterator[JoinTokens]:
    store = JoinTokens.open(db_url)
    yield store
    store.close()


def refusal(tokens: JoinTokens, token: str, service: str, namespace: str, now: datetime) -> str:
    with pytest.raises(TokenRefused) as caught:
        tokens.redeem(token, service, namespace, now=now)
    return caught.value.reason


def test_a_token_works_once(tokens: JoinTokens, now: datetime) -> None:
    issued = tokens.create("web", "shop", now=now)
    assert issued.token.startswith("mjt_")
    assert len(issued.token) >= 4 + 43  # 32 random bytes, url-safe base64
    assert issued.expires_at == now + timedelta(minutes=15)
    info = tokens.redeem(issued.token, "web", "shop", now=now + timedelta(minutes=1))
    assert (info.id, info.service, info.namespace) == (issued.id, "web", "shop")
    assert info.used_at == now + timedelta(minutes=1)
    assert refusal(tokens, issued.token, "web", "shop", now + timedelta(minutes=2)) == "used"
    assert tokens.get(issued.id).state(now) == "used"


def test_tokens_are_unique(tokens: JoinTokens, now: datetime) -> None:
    made = [tokens.create("web", "shop", now=now) for _ in range(20)]
    assert len({m.token for m in made}) == 20
    assert len({m.id for m in made}) == 20


def test_an_expired_token_is_refused(tokens: JoinTokens, now: datetime) -> None:
    issued = tokens.create("web", "shop", now=now, ttl=timedelta(minutes=5))
    assert refusal(tokens, issued.token, "web", "shop", now + timedelta(minutes=5)) == "expired"
    assert tokens.get(issued.id).state(now + timedelta(minutes=5)) == "expired"
    # a second before expiry it still works
    again = tokens.create("web", "shop", now=now, ttl=timedelta(minutes=5))
    tokens.redeem(again.token, "web", "shop", now=now + timedelta(minutes=5) - timedelta(seconds=1))


def test_the_wrong_service_is_refused_without_using_the_token(
    tokens: JoinTokens, now: datetime
) -> None:
    issued = tokens.create("web", "shop", now=now)
    assert refusal(tokens, issued.token, "db", "shop", now) == "wrong_service"
    assert refusal(tokens, issued.token, "web", "other", now) == "wrong_service"
    assert tokens.get(issued.id).state(now) == "active"
    tokens.redeem(issued.token, "web", "shop", now=now)


def test_unknown_tokens_are_refused(tokens: JoinTokens, now: datetime) -> None:
    issued = tokens.create("web", "shop", now=now)
    for bad in ("mjt_" + "A" * 43, issued.token + "x", issued.token[:-1], "", "x" * 10_000):
        with pytest.raises(TokenRefused) as caught:
            tokens.redeem(bad, "web", "shop", now=now)
        assert caught.value.reason == "unknown"
        assert caught.value.token_id is None
    with pytest.raises(TokenRefused) as used:
        tokens.redeem(issued.token, "db", "shop", now=now)
    assert used.value.token_id == issued.id  # known tokens are named by id, for the audit


def test_revoke(tokens: JoinTokens, now: datetime) -> None:
    issued = tokens.create("web", "shop", now=now)
    assert tokens.revoke(issued.id, now=now) is True
    assert tokens.revoke(issued.id, now=now) is False
    assert refusal(tokens, issued.token, "web", "shop", now) == "revoked"
    assert tokens.get(issued.id).state(now) == "revoked"
    used = tokens.create("web", "shop", now=now)
    tokens.redeem(used.token, "web", "shop", now=now)
    assert tokens.revoke(used.id, now=now) is False
    assert tokens.get(used.id).revoked_at is None
    with pytest.raises(TokenNotFound):
        tokens.revoke("no-such-id", now=now)
    with pytest.raises(TokenNotFound):
        tokens.get("no-such-id")


def test_tokens_are_never_stored_in_plain_text(tokens: JoinTokens, now: datetime) -> None:
    issued = [tokens.create("web", "shop", now=now) for _ in range(3)]
    tokens.redeem(issued[0].token, "web", "shop", now=now)
    with tokens.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM join_tokens")).mappings().all()
    stored = " ".join(str(v) for row in rows for v in row.values())
    for each in issued:
        assert each.token not in stored
        assert each.token.removeprefix("mjt_") not in stored
        assert hashlib.sha256(each.token.encode()).hexdigest() in stored
    assert issued[0].token not in repr(issued[0])


def test_list_shows_every_token_without_secrets(tokens: JoinTokens, now: datetime) -> None:
    a = tokens.create("web", "shop", now=now)
    b = tokens.create("db", "shop", now=now + timedelta(seconds=1), ttl=timedelta(hours=1))
    tokens.redeem(a.token, "web", "shop", now=now)
    listed = tokens.list()
    assert [t.id for t in listed] == [b.id, a.id]
    assert [t.state(now + timedelta(seconds=2)) for t in listed] == ["active", "used"]
    assert all(not hasattr(t, "token") for t in listed)


def test_bad_arguments(tokens: JoinTokens, now: datetime) -> None:
    for service in ("", "Web", "web shop", "w" * 300):
        with pytest.raises(InvalidSpiffeId):
            tokens.create(service, "shop", now=now)
    for ttl in (timedelta(0), timedelta(days=8)):
        with pytest.raises(ValueError):
            tokens.create("web", "shop", now=now, ttl=ttl)
    with pytest.raises(ValueError):
        tokens.create("web", "shop", now=now.replace(tzinfo=None))
    assert tokens.list() == []


def test_purge_removes_long_expired_tokens(tokens: JoinTokens, now: datetime) -> None:
    old = tokens.create("web", "shop", now=now, ttl=timedelta(minutes=1))
    fresh = tokens.create("web", "shop", now=now + timedelta(days=2))
    assert tokens.purge(before=now + timedelta(days=1)) == 1
    assert [t.id for t in tokens.list()] == [fresh.id]
    with pytest.raises(TokenNotFound):
        tokens.get(old.id)


def race_to_redeem(
    stores: list[JoinTokens], token: str, now: datetime, racers: int = 8
) -> Counter[str]:
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            stores[index % len(stores)].redeem(token, "web", "shop", now=now)
            result = "ok"
        except TokenRefused as exc:
            result = exc.reason
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(outcomes)


def test_concurrent_redeems_have_one_winner(db_url: str, now: datetime) -> None:
    # Separate stores (own engines), like several controller replicas behind one endpoint.
    stores = [JoinTokens(open_engine(db_url)) for _ in range(4)]
    try:
        for round_ in range(3):
            issued = stores[0].create("web", "shop", now=now)
            assert race_to_redeem(stores, issued.token, now) == {"ok": 1, "used": 7}, round_
    finally:
        for store in stores:
            store.close()


def test_tokens_share_the_audit_database(db_url: str, now: datetime) -> None:
    from reconciler.audit import AuditLog

    engine = open_engine(db_url)
    try:
        audit, tokens = AuditLog(engine), JoinTokens(engine)
        issued = tokens.create("web", "shop", now=now)
        audit.append(
            "cli",
            "token.issued",
            "shop/web",
            {"token_id": issued.id, "token": issued.token},
            now=now,
        )
        record = audit.get(1)
        assert record.data["token_id"] == issued.id
        assert issued.token not in str(record.data)
        with engine.connect() as connection:
            names = set(sa.inspect(connection).get_table_names())
        assert {"audit_records", "join_tokens"} <= names
    finally:
        engine.dispose()
