"""Audit checkpoints over the fleet stream, end to end: a real fleet listener (mTLS
WebSocket) and real agents with their state dirs. Proxies keep the checkpoints the controller
signs and report the newest in their hello; a controller whose database lost its newest
records (and whose own anchor file is gone) learns of it from the first proxy that says
hello. Agents from before checkpoints never receive one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fleet"))

from fleet_helpers import Controller, desired, now, run, start_agent, until
from test_audit_tamper import tamper
from websockets.asyncio.client import connect

from proxy_runtime.agent.checkpoints import CHECKPOINT_FILE, CheckpointStore
from proxy_runtime.protocol.fleet import (
    SUBPROTOCOL,
    Checkpoint,
    Hello,
    ProtocolError,
    decode_to_controller,
    decode_to_proxy,
    encode,
)
from reconciler.audit.anchor import to_wire
from reconciler.audit.anchor_files import ANCHOR_FILE
from reconciler.controller.anchoring import AuditAnchoring

CP = Checkpoint(7, "ab" * 32, "2026-11-25T12:00:00.000000Z", "ed25519:00", "c2ln")


def test_protocol_checkpoint_message_and_hello_field() -> None:
    assert decode_to_proxy(encode(CP)) == CP
    old = Hello("p", "s", "n")  # what agents before checkpoints send: no field
    assert "checkpoint" not in encode(old)
    assert decode_to_controller(encode(old)).anchoring is False  # type: ignore[union-attr]
    new = decode_to_controller(encode(Hello("p", "s", "n", checkpoint=None, anchoring=True)))
    assert isinstance(new, Hello) and new.anchoring and new.checkpoint is None
    new = decode_to_controller(encode(Hello("p", "s", "n", checkpoint=CP, anchoring=True)))
    assert isinstance(new, Hello) and new.checkpoint == CP
    doc = json.loads(encode(Hello("p", "s", "n", checkpoint=CP, anchoring=True)))
    for bad, match in (({**doc["checkpoint"], "seq": 0}, "positive"),
                       ({**doc["checkpoint"], "hash": "AB" * 32}, "hex"),
                       ({**doc["checkpoint"], "x": 1}, "exactly the fields"),
                       ([1], "object or null")):
        with pytest.raises(ProtocolError, match=match):
            decode_to_controller(json.dumps({**doc, "checkpoint": bad}))


def test_agent_store_keeps_the_highest_seqs(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    for seq in (5, 9, 2, 7, 8, 1):
        store.add(Checkpoint(seq, "ab" * 32, f"2026-11-25T12:00:0{seq}.000000Z", "k", "s"))
    assert [c.seq for c in CheckpointStore(tmp_path, keep=3).items] == [7, 8, 9]
    (tmp_path / CHECKPOINT_FILE).write_text("{not json")
    assert CheckpointStore(tmp_path).newest() is None  # unreadable: logged, starts empty


def test_truncated_database_is_noticed_from_a_proxy_hello(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        anchoring = AuditAnchoring(ctl.data_dir, ctl.audit, now)
        fleet = await ctl.start()
        sd = ctl.enroll(tmp_path / "p1", "web", "shop")
        a = await start_agent(sd, fleet.url, "web-1", "web", "shop")
        try:
            await until(lambda: fleet.connected() == ["web-1"], what="connect")
            assert ctl.hellos[0].checkpoint is None
            for i in range(6):
                ctl.audit.append("test", "deploy.step", f"s{i}", {"i": i}, now=now())
            cp = anchoring.tick()
            assert cp is not None and anchoring.tick() is None  # head unchanged: no new one
            assert fleet.send_checkpoint(to_wire(cp)) == 1
            store = sd.path / CHECKPOINT_FILE
            await until(lambda: store.exists(), what="the proxy keeps the checkpoint")
            assert json.loads(store.read_text())[-1]["seq"] == cp.seq
        finally:
            await a.stop()
            await ctl.stop()
        head = ctl.audit.head()
        assert head is not None and head.seq > cp.seq  # proxy.disconnected etc. came after
        # An attacker with database access cuts off the tail, and the anchor file is lost.
        tamper(ctl.audit, f"DELETE FROM audit_records WHERE seq > {cp.seq - 3}")
        (ctl.data_dir / ANCHOR_FILE).unlink()
        assert ctl.audit.verify().ok
        # The controller restarts: its own anchor file has nothing to say ...
        restarted = AuditAnchoring(ctl.data_dir, ctl.audit, now)
        assert restarted.check().status == "unanchored" and restarted.degraded() == []
        before = len(ctl.hellos)  # the events seen so far stay in ctl.hellos
        fleet = await ctl.start()
        a = await start_agent(sd, fleet.url, "web-1", "web", "shop")
        try:
            await until(lambda: len(ctl.hellos) > before, what="hello")
            reported = ctl.hellos[before].checkpoint
            assert reported == to_wire(cp)
            # ... the proxy's hello does (the Connected event's checkpoint, which the
            # controller hands to the anchoring).
            got = await asyncio.to_thread(restarted.observe, reported, "web-1")
            assert got is not None and got.status == "truncated"
            assert got.missing == (cp.seq - 2, cp.seq)
            assert restarted.degraded() == [f"audit trail truncated: {got.message}"]
            alarms = ctl.records("audit.truncated")
            assert len(alarms) == 1
            assert alarms[0].data["source"] == "proxy:web-1"
            assert alarms[0].data["missing"] == [cp.seq - 2, cp.seq]
            # kept as evidence in a new anchor file; a second hello does not audit again
            assert json.loads((ctl.data_dir / ANCHOR_FILE).read_text())["evidence"][0]["seq"] \
                == cp.seq
            await asyncio.to_thread(restarted.observe, reported, "web-1")
            assert len(ctl.records("audit.truncated")) == 1
        finally:
            await a.stop()
            await ctl.stop()

    run(main())


def test_agents_without_checkpoints_never_receive_one(tmp_path: Path) -> None:
    """A hello without the checkpoint field (an older agent): no checkpoint is sent to it,
    its stream carries on as before."""

    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        sd = ctl.enroll(tmp_path / "old", "web", "default")
        ctx = ssl.create_default_context(cadata=ctl.ca.trust_bundle_pem().decode())
        ctx.load_cert_chain(sd.path / "svid.pem", sd.path / "svid.key")
        fleet.send_checkpoint(CP)  # already set when the old agent connects
        try:
            async with connect(fleet.url, ssl=ctx, subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                               open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "hello", "proxyId": "old-1", "service": "web",
                                          "namespace": "default"}))
                await until(lambda: fleet.connected() == ["old-1"], what="connect")
                assert fleet.send_checkpoint(CP) == 0
                d = desired(1)
                fleet.set_desired({"old-1": d})
                first = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert first["type"] == "snapshot" and first["version"] == d.version
                with contextlib.suppress(TimeoutError):
                    extra = await asyncio.wait_for(ws.recv(), 0.3)
                    raise AssertionError(f"unexpected frame {extra!r}")
        finally:
            await ctl.stop()

    run(main())


def test_a_cut_made_while_the_controller_runs_shows_within_a_round(tmp_path: Path) -> None:
    """The anchoring loop over a real fleet listener and agent: each round checks the
    database, signs the moved head and pushes it; rows deleted under it are noticed."""

    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        anchoring = AuditAnchoring(ctl.data_dir, ctl.audit, now, interval_s=0.05)
        sd = ctl.enroll(tmp_path / "p1", "web", "shop")
        a = await start_agent(sd, fleet.url, "web-1", "web", "shop")
        loop_task = asyncio.create_task(anchoring.run(fleet))
        try:
            await until(lambda: fleet.connected() == ["web-1"], what="connect")
            for i in range(8):
                ctl.audit.append("test", "deploy.step", f"s{i}", {"i": i}, now=now())

            def signed_head() -> bool:
                head, newest = ctl.audit.head(), a.agent.checkpoints.newest()
                return head is not None and newest is not None and newest.seq == head.seq

            await until(signed_head, what="the proxy holds a checkpoint of the head")
            held = a.agent.checkpoints.newest()
            assert held is not None and anchoring.degraded() == []
            tamper(ctl.audit, f"DELETE FROM audit_records WHERE seq > {held.seq - 2}")
            await until(lambda: anchoring.alarm is not None, what="the alarm")
            assert anchoring.alarm is not None
            assert anchoring.alarm.missing == (held.seq - 1, held.seq)
            await until(lambda: bool(ctl.records("audit.truncated")), what="the record")
            rec = ctl.records("audit.truncated")
            assert len(rec) == 1 and rec[0].data["source"] == "anchor file"
            # later rounds keep the alarm, audit it once, and the proxy keeps its checkpoint
            await asyncio.sleep(0.3)
            assert len(ctl.records("audit.truncated")) == 1
            assert a.agent.checkpoints.newest() == held
        finally:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
            await a.stop()
            await ctl.stop()

    run(main())


def test_a_checkpoint_signed_by_another_key_is_ignored(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A proxy cannot raise a false alarm (nor hide one) with a checkpoint it made up."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from reconciler.audit import Anchor, AuditLog
    from reconciler.audit.anchor import make_checkpoint
    from reconciler.store import sqlite_url

    log = AuditLog.open(sqlite_url(tmp_path / "ctl"))
    try:
        log.append("test", "deploy.step", "s", {}, now=now())
        anchoring = AuditAnchoring(tmp_path / "ctl", log, now)
        forged = make_checkpoint(Ed25519PrivateKey.generate(), Anchor(99, "ab" * 32), now())
        for _ in range(3):
            assert anchoring.observe(to_wire(forged), "evil-1") is None
        assert anchoring.alarm is None and anchoring.file.all() == []
        assert not (tmp_path / "ctl" / ANCHOR_FILE).exists()
        assert len([r for r in caplog.records if "not signed by" in r.getMessage()]) == 1
        assert log.list(kind="audit.truncated") == []
    finally:
        log.close()


def test_an_old_checkpoint_from_a_proxy_is_judged_even_if_the_file_has_newer_ones(
        tmp_path: Path) -> None:
    """The tail was cut, the anchor file lost, and the chain grew again past the cut with
    more than 16 new checkpoints: a proxy's old checkpoint still shows the rewrite."""
    from reconciler.audit import AuditLog
    from reconciler.store import sqlite_url

    data = tmp_path / "ctl"
    log = AuditLog.open(sqlite_url(data))
    try:
        for i in range(5):
            log.append("test", "deploy.step", f"s{i}", {"i": i}, now=now())
        old = AuditAnchoring(data, log, now).tick()
        assert old is not None and old.seq == 5
        tamper(log, "DELETE FROM audit_records WHERE seq > 2")
        (data / ANCHOR_FILE).unlink()
        anchoring = AuditAnchoring(data, log, now)
        for i in range(20):
            log.append("test", "deploy.step", f"t{i}", {"i": i}, now=now())
            anchoring.tick()
        assert anchoring.check().status == "proven"
        assert old not in anchoring.file.all()
        got = anchoring.observe(to_wire(old), "web-1")
        assert got is not None and got.status == "rewritten" and got.checkpoint == old
        assert anchoring.file.evidence == [old]
        assert [r.data["source"] for r in log.list(kind="audit.rewritten")] == ["proxy:web-1"]
    finally:
        log.close()
