"""verify() against tampering done with raw SQL, on SQLite and PostgreSQL.

Each test writes a clean chain of 10 records, changes the table the way an attacker with
database access would (dropping the append-only triggers first), and checks what verify()
reports.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import sqlalchemy as sa

from reconciler.audit import Anchor, AuditEntry, AuditLog, ChainBroken
from reconciler.audit.record import record_hash

N = 10


@pytest.fixture
def chain(log: AuditLog, clock: Any) -> AuditLog:
    for i in range(1, N + 1):
        log.append(
            f"user{i % 3}", "deploy.step", f"proxy-{i}", {"i": i, "ok": True}, now=clock.tick()
        )
    assert log.verify().ok
    return log


def tamper(log: AuditLog, *statements: str, params: dict[str, Any] | None = None) -> None:
    """Run raw SQL against the audit table, with its append-only triggers removed."""
    with log.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "DROP TRIGGER IF EXISTS audit_records_append_only ON audit_records"
            )
        else:
            connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_no_update")
            connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_records_no_delete")
        for statement in statements:
            connection.execute(sa.text(statement), params or {})


def row(log: AuditLog, seq: int) -> dict[str, Any]:
    with log.engine.connect() as connection:
        found = (
            connection.execute(sa.text("SELECT * FROM audit_records WHERE seq = :s"), {"s": seq})
            .mappings()
            .one()
        )
    return dict(found)


def test_clean_chain_verifies(chain: AuditLog) -> None:
    result = chain.verify()
    assert (result.ok, result.verified_up_to, result.broken_at, result.reason) == (
        True,
        N,
        None,
        None,
    )
    assert result.head == chain.head()


def test_the_table_refuses_update_and_delete(chain: AuditLog) -> None:
    for statement in (
        "UPDATE audit_records SET actor = 'x' WHERE seq = 2",
        "DELETE FROM audit_records WHERE seq = 2",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), chain.engine.begin() as c:
            c.exec_driver_sql(statement)
    assert chain.get(2).actor == "user2"
    assert chain.count() == N


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("data", '{"i":4,"ok":false}'),
        ("data", '{"i": 4, "ok": true, "extra": 1}'),
        ("time", "2026-11-25T12:00:04.000001Z"),
        ("actor", "someone-else"),
        ("kind", "deploy.other"),
        ("subject", "proxy-44"),
        ("prev_hash", "f" * 64),
        ("hash", "e" * 64),
    ],
)
def test_an_edited_field_is_caught(chain: AuditLog, column: str, value: str) -> None:
    tamper(chain, f"UPDATE audit_records SET {column} = :v WHERE seq = 4", params={"v": value})
    result = chain.verify()
    assert not result.ok
    assert result.broken_at == 4
    assert result.verified_up_to == 3
    assert result.reason
    with pytest.raises(ChainBroken) as caught:
        result.raise_if_broken()
    assert caught.value.broken_at == 4


def test_an_edit_with_a_recomputed_hash_is_caught_at_the_next_record(chain: AuditLog) -> None:
    forged = row(chain, 4)
    forged["data"] = json.loads(forged["data"]) | {"ok": False}
    new_hash = record_hash(
        {k: forged[k] for k in ("seq", "time", "actor", "kind", "subject", "data", "prev_hash")}
    )
    tamper(
        chain,
        "UPDATE audit_records SET data = :d, hash = :h WHERE seq = 4",
        params={"d": json.dumps(forged["data"]), "h": new_hash},
    )
    result = chain.verify()
    assert (result.ok, result.broken_at, result.verified_up_to) == (False, 5, 4)
    assert "prev_hash of record 5" in (result.reason or "")


def test_data_that_is_no_longer_json_is_caught(chain: AuditLog) -> None:
    tamper(chain, "UPDATE audit_records SET data = 'not json' WHERE seq = 6")
    result = chain.verify()
    assert (result.ok, result.broken_at, result.verified_up_to) == (False, 6, 5)
    with pytest.raises(ChainBroken):
        chain.get(6)


@pytest.mark.parametrize("seq", [1, 5, N - 1])
def test_a_deleted_record_is_caught(chain: AuditLog, seq: int) -> None:
    tamper(chain, "DELETE FROM audit_records WHERE seq = :s", params={"s": seq})
    result = chain.verify()
    assert (result.ok, result.broken_at, result.verified_up_to) == (False, seq, seq - 1)
    assert "missing" in (result.reason or "")


def test_deleting_and_renumbering_is_caught(chain: AuditLog) -> None:
    tamper(
        chain,
        "DELETE FROM audit_records WHERE seq = 5",
        # two steps, so no intermediate state repeats a primary key
        "UPDATE audit_records SET seq = seq + 1000 WHERE seq > 5",
        "UPDATE audit_records SET seq = seq - 1001 WHERE seq > 1000",
    )
    result = chain.verify()
    assert (result.ok, result.broken_at, result.verified_up_to) == (False, 5, 4)


def test_an_inserted_record_is_caught(chain: AuditLog) -> None:
    # Make room at seq 4 and insert a record that is correct on its own: right prev_hash
    # (record 3's hash) and a right hash of its own fields.
    three = row(chain, 3)
    fields = {
        "seq": 4,
        "time": "2026-11-25T12:00:03.500000Z",
        "actor": "intruder",
        "kind": "deploy.step",
        "subject": "proxy-x",
        "data": {"i": 99},
        "prev_hash": three["hash"],
    }
    tamper(
        chain,
        "UPDATE audit_records SET seq = seq + 1000 WHERE seq >= 4",
        "UPDATE audit_records SET seq = seq - 999 WHERE seq > 1000",
        "INSERT INTO audit_records (seq, time, actor, kind, subject, data, prev_hash, hash) "
        "VALUES (4, :time, :actor, :kind, :subject, :data, :prev_hash, :hash)",
        params={**fields, "data": json.dumps(fields["data"]), "hash": record_hash(fields)},
    )
    result = chain.verify()
    assert (result.ok, result.broken_at, result.verified_up_to) == (False, 5, 4)


def test_an_inserted_record_without_renumbering_is_caught(chain: AuditLog) -> None:
    # A row squeezed in with an unused seq past the end, linking to nothing real.
    tamper(
        chain,
        "INSERT INTO audit_records (seq, time, actor, kind, subject, data, prev_hash, hash) "
        "VALUES (:seq, '2026-11-25T13:00:00.000000Z', 'x', 'k', 's', '{}', :p, :h)",
        params={"seq": N + 2, "p": "0" * 64, "h": "1" * 64},
    )
    result = chain.verify()
    assert (result.ok, result.broken_at, result.verified_up_to) == (False, N + 1, N)


def test_reordered_records_are_caught(chain: AuditLog) -> None:
    a, b = row(chain, 3), row(chain, 4)
    columns = ("time", "actor", "kind", "subject", "data", "prev_hash", "hash")
    assignments = ", ".join(f"{c} = :{c}" for c in columns)
    statement = f"UPDATE audit_records SET {assignments} WHERE seq = :seq"
    tamper(chain, statement, params={**{c: b[c] for c in columns}, "seq": 3})
    tamper(chain, statement, params={**{c: a[c] for c in columns}, "seq": 4})
    result = chain.verify()
    assert (result.ok, result.broken_at, result.verified_up_to) == (False, 3, 2)


def test_a_truncated_tail_verifies_only_up_to_where_it_ends(chain: AuditLog) -> None:
    anchor = chain.head()
    assert anchor == Anchor(N, chain.get(N).hash)
    tamper(chain, "DELETE FROM audit_records WHERE seq > 7")
    result = chain.verify()
    # The records alone cannot show the cut: the rest is a valid chain.
    assert (result.ok, result.verified_up_to) == (True, 7)
    # An anchor published before the cut can.
    anchored = chain.verify(anchor=anchor)
    assert (anchored.ok, anchored.verified_up_to, anchored.broken_at) == (False, 7, 8)
    assert "cut off" in (anchored.reason or "")


def test_a_rewritten_tail_is_caught_by_an_anchor(chain: AuditLog, clock: Any) -> None:
    anchor = chain.head()
    assert anchor is not None
    # Cut the last two records and append replacements: a valid chain, different history.
    tamper(chain, "DELETE FROM audit_records WHERE seq > 8")
    chain.append("forger", "deploy.step", "proxy-9", {"i": 9, "ok": False}, now=clock.tick())
    chain.append("forger", "deploy.step", "proxy-10", {"i": 10, "ok": False}, now=clock.tick())
    assert chain.verify().ok
    result = chain.verify(anchor=anchor)
    assert (result.ok, result.broken_at) == (False, N)
    assert "anchor" in (result.reason or "")


def test_an_anchor_that_holds_passes(chain: AuditLog, clock: Any) -> None:
    anchor = chain.head()
    assert anchor is not None
    chain.append("later", "deploy.step", "proxy-11", {}, now=clock.tick())
    assert chain.verify(anchor=anchor).ok
    assert not chain.verify(anchor=Anchor(anchor.seq, "0" * 64)).ok


def test_verify_in_small_batches_gives_the_same_verdict(chain: AuditLog) -> None:
    assert chain.verify(batch=3) == chain.verify(batch=10_000)
    tamper(chain, "UPDATE audit_records SET actor = 'x' WHERE seq = 7")
    small, big = chain.verify(batch=2), chain.verify()
    assert small == big
    assert small.broken_at == 7


def test_verify_from_a_later_start(chain: AuditLog) -> None:
    tamper(chain, "UPDATE audit_records SET actor = 'x' WHERE seq = 2")
    assert chain.verify().broken_at == 2
    later = chain.verify(start=5)
    assert (later.ok, later.verified_up_to, later.checked) == (True, N, N - 4)
    with pytest.raises(ValueError):
        chain.verify(start=0)
    # an anchor before the start is still compared with what is stored
    assert not chain.verify(start=5, anchor=Anchor(2, row(chain, 2)["hash"][::-1])).ok
    assert chain.verify(start=5, anchor=Anchor(3, row(chain, 3)["hash"])).ok


def test_a_tampered_export_is_caught(chain: AuditLog, tmp_path: Any) -> None:
    from reconciler.audit import verify_jsonl

    path = tmp_path / "audit.jsonl"
    with path.open("w", encoding="utf-8") as fp:
        assert chain.export_jsonl(fp) == N
    with path.open(encoding="utf-8") as fp:
        assert verify_jsonl(fp).ok
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[5] = lines[5].replace('"ok":true', '"ok":false')
    result = verify_jsonl(iter(lines))
    assert (result.ok, result.broken_at) == (False, 6)
    lines[5] = "{garbage"
    assert verify_jsonl(iter(lines)).broken_at == 6


def test_the_documented_ten_line_verifier_agrees(chain: AuditLog, tmp_path: Any) -> None:
    # The recipe in docs/audit.md, run over an export.
    path = tmp_path / "audit.jsonl"
    with path.open("w", encoding="utf-8") as fp:
        chain.export_jsonl(fp)

    def verify(lines: list[str]) -> bool:
        prev, seq = "0" * 64, 0
        for line in lines:
            r = json.loads(line)
            body = {
                k: r[k] for k in ("seq", "time", "actor", "kind", "subject", "data", "prev_hash")
            }
            text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if r["seq"] != seq + 1 or r["prev_hash"] != prev:
                return False
            if hashlib.sha256(text.encode()).hexdigest() != r["hash"]:
                return False
            prev, seq = r["hash"], r["seq"]
        return True

    lines = path.read_text(encoding="utf-8").splitlines()
    assert verify(lines)
    assert not verify(lines[:3] + lines[4:])
    assert not verify([lines[0].replace("user1", "user2"), *lines[1:]])
    assert not verify([lines[1], lines[0], *lines[2:]])


def test_append_after_tampering_still_extends_the_stored_tail(chain: AuditLog, clock: Any) -> None:
    # The log keeps recording (the controller must not stop); verify still points at the damage.
    tamper(chain, "UPDATE audit_records SET subject = 'x' WHERE seq = 3")
    record = chain.append("admin", "audit.note", "", {}, now=clock.tick())
    assert record.seq == N + 1
    assert chain.verify().broken_at == 3


def test_append_many_is_one_chain(log: AuditLog, clock: Any) -> None:
    entries = [AuditEntry("a", "k.x", f"s{i}", {"i": i}) for i in range(50)]
    records = log.append_many(entries, now=clock.tick())
    assert [r.seq for r in records] == list(range(1, 51))
    assert log.verify(batch=7).verified_up_to == 50
