"""Finding 9 of issue 17 with real processes: a real `meshcd serve` and a joined
`meshcd proxy join`. The controller signs checkpoints of its audit chain and the proxy keeps
them; someone with database access deletes the newest audit rows. `meshcd audit verify`
reports the cut with the missing seqs (on main it said "intact"), and a controller restarted
on the truncated database, even without its anchor file, learns it from the proxy's hello:
audited, status degraded, one log line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "controller"))

from controller_helpers import (
    ConfigRepo,
    Processes,
    Serve,
    free_static_port,
    mesh_files,
    until,
)
from test_audit_tamper import tamper

from reconciler.audit import AuditLog
from reconciler.store import sqlite_url

PROXY = "web.shop-0"


@pytest.fixture
def procs() -> Iterator[Processes]:
    p = Processes()
    try:
        yield p
    finally:
        p.stop_all()


def _newest(path: Path) -> int:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    items = doc if isinstance(doc, list) else doc.get("checkpoints", [])
    return max((int(c["seq"]) for c in items), default=0)


def test_truncated_audit_trail_is_detected_by_verify_and_by_a_restarted_controller(
        tmp_path: Path, procs: Processes) -> None:
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(mesh_files({"web": [free_static_port()]}), "first config")
    data = tmp_path / "ctl"
    serve = Serve(procs, data, repo.url)
    serve.start()
    serve.wait_status(c1, {"deployed"})
    state = tmp_path / "proxy"
    serve.join_proxy(PROXY, "web", state)
    until(lambda: serve.ledger().get(PROXY, {}).get("state") == "SYNCED", 60, "proxy synced")
    connected = until(lambda: serve.audit("proxy.connected"), 30, "proxy.connected")[0]["seq"]
    proxy_file = state / "audit-checkpoints.json"
    until(lambda: _newest(proxy_file) >= connected, 30, "the proxy keeps a checkpoint")
    assert (data / "audit-anchor.key").stat().st_mode & 0o777 == 0o600
    ok = serve.cli("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "proves no record up to" in ok.stdout
    assert serve.proc is not None
    assert serve.proc.terminate() == 0

    # Someone with database access cuts the newest rows off (the chain stays valid).
    held = _newest(proxy_file)
    log = AuditLog.open(sqlite_url(data))
    try:
        head = log.head()
        assert head is not None and head.seq > held
        tamper(log, f"DELETE FROM audit_records WHERE seq > {held - 4}")
        assert log.verify().ok
    finally:
        log.close()
    store = ["--store", sqlite_url(data)]
    cut = serve.cli("audit", "verify", *store)
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert f"audit chain intact: {held - 4} records verified" in cut.stdout
    assert (f"audit chain TRUNCATED: records {held - 3}..{head.seq} missing: the chain was "
            "truncated") in cut.stderr
    proxy_only = serve.cli("audit", "verify", *store, "--checkpoints", str(proxy_file))
    assert proxy_only.returncode == 1 and "TRUNCATED" in proxy_only.stderr

    # The controller's own anchor file is gone too; it restarts on the truncated database.
    (data / "audit-anchors.json").unlink()
    serve.start()
    until(lambda: serve.get("/api/status")["health"]["problems"], 60, "status degraded")
    status = serve.get("/api/status")
    # this start appended records too (controller.started, ...): the gap ends at `held`
    assert status["health"]["problems"][0].startswith("audit trail truncated: records ")
    assert f"..{held} missing: the chain was truncated" in status["health"]["problems"][0]
    alarms = serve.audit("audit.truncated")
    assert len(alarms) == 1 and alarms[0]["data"]["source"] == f"proxy:{PROXY}"
    assert alarms[0]["data"]["missing"][1] == held
    assert serve.proc is not None
    assert "AUDIT TRAIL TRUNCATED: records" in serve.proc.output()
    shown = serve.cli("status")
    assert "health:      DEGRADED - audit trail truncated" in shown.stdout, shown.stdout + shown.stderr
    api = serve.cli("audit", "verify")  # through the API: the evidence is kept
    assert api.returncode == 1 and f"..{held} missing" in api.stderr
