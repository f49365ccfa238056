"""The per-proxy ledger (pure), its table on both backends, and the agent's pure decisions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from fleet_helpers import config, desired

from proxy_runtime.agent.core import (
    Apply,
    Refuse,
    backoff_delay,
    judge_snapshot,
    new_windows,
    renew_delay,
    with_identity,
)
from proxy_runtime.protocol.canonical import compute_version
from proxy_runtime.protocol.fleet import Snapshot
from reconciler.fleet import LedgerStore, ProxyRecord, ProxyState

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _connected(running: str | None = None) -> ProxyRecord:
    r = ProxyRecord("p1")
    r.connect("web", "shop", {"a": "b"}, running, T0)
    return r


def test_states() -> None:
    r = ProxyRecord("p1")
    assert r.state is ProxyState.DISCONNECTED
    r.connect("web", "shop", {}, None, T0)
    assert r.state is ProxyState.SYNCED  # nothing desired
    d1 = desired(1)
    r.set_desired(d1)
    assert r.state is ProxyState.STALE
    push = r.start_push("n1", 0.0)
    assert push is not None and push.desired is d1 and r.state is ProxyState.STALE
    assert r.ack("n1", d1.version).matched
    assert r.state is ProxyState.SYNCED
    d2 = desired(2)
    r.set_desired(d2)
    assert r.start_push("n2", 1.0) is not None
    answer = r.nack("n2", "boom")
    assert answer.matched and answer.version == d2.version
    assert r.state is ProxyState.NACKED and r.last_error == "boom" and r.acked_version == d1.version
    assert not r.needs_push()  # not sent again on this connection
    r.disconnect(T0)
    assert r.state is ProxyState.DISCONNECTED
    r.connect("web", "shop", {}, d1.version, T0)
    assert r.needs_push()  # a new connection is a new try


def test_one_in_flight_latest_wins() -> None:
    r = _connected()
    d1, d2, d3 = desired(1), desired(2), desired(3)
    r.set_desired(d1)
    assert r.start_push("n1", 0.0) is not None
    r.set_desired(d2)
    assert r.start_push("n2", 0.0) is None  # one in flight
    r.set_desired(d3)
    # an ACK with the right nonce but another version, or a wrong nonce, is not an answer
    assert not r.ack("n1", d3.version).matched
    assert not r.ack("n0", d1.version).matched
    ans = r.ack("n1", d1.version)
    assert ans.matched and ans.sent_at == 0.0
    assert r.acked_version == d1.version and r.state is ProxyState.STALE
    push = r.start_push("n3", 1.0)
    assert push is not None and push.desired is d3  # d2 was never sent
    assert not r.ack("n1", d1.version).matched  # a replay of the old ack changes nothing
    assert r.ack("n3", d3.version).matched and r.state is ProxyState.SYNCED


def test_running_version_equal_to_desired_is_not_pushed() -> None:
    d = desired(1)
    r = _connected(running=d.version)
    r.set_desired(d)
    assert r.state is ProxyState.SYNCED and r.start_push("n", 0.0) is None


def test_disconnect_drops_the_in_flight_push() -> None:
    r = _connected()
    r.set_desired(desired(1))
    assert r.start_push("n1", 0.0) is not None
    r.disconnect(T0)
    assert not r.ack("n1", desired(1).version).matched
    r.connect("web", "shop", {}, None, T0)
    assert r.start_push("n2", 0.0) is not None


def test_entry_round_trip_and_json() -> None:
    r = _connected()
    r.set_desired(desired(1))
    e = r.entry()
    doc = e.to_dict()
    assert doc["proxyId"] == "p1" and doc["state"] == "STALE"
    assert doc["connectedAt"] == "2026-11-25T12:00:00Z" and doc["labels"] == {"a": "b"}
    back = ProxyRecord.from_entry(e)
    assert back.state is ProxyState.DISCONNECTED and back.desired_version == e.desired_version


def test_ledger_store_upserts_and_loads(db_url: str) -> None:
    store = LedgerStore.open(db_url)
    try:
        a, b = _connected(), ProxyRecord("p2")
        a.set_desired(desired(1))
        a.start_push("n1", 0.0)
        a.ack("n1", desired(1).version)
        store.save([a.entry(), b.entry()])
        a.last_error = "x"
        a.disconnect(T0 + timedelta(seconds=5))
        store.save([a.entry()])
        loaded = {e.proxy_id: e for e in store.load()}
        assert set(loaded) == {"p1", "p2"}
        assert loaded["p1"].acked_version == desired(1).version
        assert loaded["p1"].state is ProxyState.DISCONNECTED
        assert loaded["p1"].last_error == "x" and loaded["p1"].labels == {"a": "b"}
        assert loaded["p1"].last_seen == T0 + timedelta(seconds=5)
        store.delete("p2")
        assert [e.proxy_id for e in store.load()] == ["p1"]
        store.save([])
        # a second store on the same database does not recreate or clobber the table
        again = LedgerStore.open(db_url)
        assert [e.proxy_id for e in again.load()] == ["p1"]
        again.close()
    finally:
        store.close()


# -- the agent's decisions ------------------------------------------------------------------

IDENT = {"spiffeId": "spiffe://td/ns/a/sa/b", "certificatePem": "c", "privateKeyPem": "k",
         "trustBundlePem": "b"}


def _snap(doc: dict[str, object], epoch: int = 1, version: str | None = None) -> Snapshot:
    return Snapshot("n", epoch, version or compute_version(doc), "rev9", doc)  # type: ignore[arg-type]


def test_judge_accepts_and_injects_identity() -> None:
    doc = config(1)
    got = judge_snapshot(_snap(doc, epoch=3), 3, IDENT)
    assert isinstance(got, Apply) and got.epoch == 3
    assert got.document["identity"] == IDENT and got.document["revision"] == "rev9"
    assert "version" not in got.document
    assert "identity" not in doc  # the message's config is not changed


@pytest.mark.parametrize("case, match", [
    ("old-epoch", "stale epoch 1"),
    ("hash", "version mismatch"),
    ("identity", "carries an identity"),
])
def test_judge_refuses(case: str, match: str) -> None:
    doc = config(1)
    if case == "old-epoch":
        msg = _snap(doc, epoch=1)
        newest = 2
    elif case == "hash":
        msg = _snap(doc, version="0" * 64)
        newest = 0
    else:
        doc = {**doc, "identity": IDENT}
        msg = _snap(doc)
        newest = 0
    got = judge_snapshot(msg, newest, IDENT)
    assert isinstance(got, Refuse) and match in got.error


def test_with_identity_drops_empty_revision() -> None:
    assert "revision" not in with_identity({"revision": "x", "version": "v"}, "", None)


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        d = backoff_delay(attempt, rng, base=0.5, cap=30.0)
        assert 0.0 <= d <= min(30.0, 0.5 * 2**attempt)
    samples = {round(backoff_delay(10, rng), 3) for _ in range(50)}
    assert len(samples) > 40  # full jitter, not a fixed schedule


def test_renew_delay_is_half_life_with_jitter() -> None:
    nb, na = T0, T0 + timedelta(hours=24)
    rng = random.Random(1)
    delays = [renew_delay(nb, na, T0, rng) for _ in range(200)]
    assert all(12 * 3600 - 0.05 * 86400 <= d <= 12 * 3600 + 0.05 * 86400 for d in delays)
    assert len(set(delays)) > 150
    assert renew_delay(nb, na, T0 + timedelta(hours=20), rng) == 0.0


def test_new_windows() -> None:
    ws = [{"second": s} for s in range(5, 10)]
    assert [w["second"] for w in new_windows(ws, 7)] == [8, 9]
    assert new_windows(ws, 9) == []
