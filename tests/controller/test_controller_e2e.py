"""End to end with real processes: `meshcd serve` on SQLite watching a bare repo, sample
apps, `meshcd proxy join` proxies. A good commit reaches every proxy; an invalid one reaches
none and the previous config keeps serving; the CLI shows both. On Envoy (the data plane
of every end-to-end test) and, as the one end-to-end run kept on it (about 15 s), meshcd's
builtin proxy, so its join path keeps working for those who run it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from controller_helpers import (
    NS,
    ConfigRepo,
    Processes,
    Serve,
    free_static_port,
    http_get,
    mesh_files,
    outbound_port,
    until,
)

from reconciler.audit import AuditLog, verify_jsonl
from reconciler.store import open_engine


def start_fleet(procs: Processes, tmp_path: Path, ports: dict[str, list[int]],
                serve: Serve) -> dict[str, Path]:
    """Sample apps behind each endpoint and one joined proxy per endpoint (ids as the
    static fleet names them). Returns proxy id -> state dir."""
    apps = [f"{name}-{i}=127.0.0.1:{p + 1000}" for name, ps in ports.items()
            for i, p in enumerate(ps)]
    app = procs.start([sys.executable, "-m", "demo.sample_app",
                       *[a for x in apps for a in ("--app", x)]])
    app.wait_for("sample apps listening")
    states = {}
    for name, ps in ports.items():
        for i in range(len(ps)):
            pid = f"{name}.{NS}-{i}"
            states[pid] = tmp_path / f"proxy-{pid}"
            serve.join_proxy(pid, name, states[pid])
    return states


def all_synced(serve: Serve, ids: set[str]) -> bool:
    ledger = serve.ledger()
    return ids <= set(ledger) and all(
        ledger[i]["state"] == "SYNCED" and ledger[i]["ackedVersion"] for i in ids)


@pytest.mark.parametrize("dataplane", ["envoy", "builtin"])
def test_good_commit_reaches_every_proxy_and_invalid_one_none(tmp_path: Path, procs: Processes,
                                                                dataplane: str) -> None:
    ports = {"web": [free_static_port()], "api": [free_static_port(), free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(mesh_files(ports), "first config")
    serve = Serve(procs, tmp_path / "ctl", repo.url, dataplane=dataplane)
    serve.start()
    assert serve.wait_status(c1, {"deployed"})["trigger"] in ("poll", "startup")
    states = start_fleet(procs, tmp_path, ports, serve)
    ids = set(states)
    until(lambda: all_synced(serve, ids), 60, "every proxy synced on the first commit")
    # each proxy runs the data plane asked for: an Envoy the agent started, or none
    for state in states.values():
        pid_file = state / "envoy" / "envoy.pid"
        assert pid_file.exists() == (dataplane == "envoy"), state
        if dataplane == "envoy":
            assert Path(f"/proc/{int(pid_file.read_text())}").exists()
    before = serve.ledger()
    # traffic: the app's call to api.shop through web's outbound port (static index 2)
    web_out = outbound_port(ports, f"web.{NS}-0")
    status, body = http_get(f"http://127.0.0.1:{web_out}/items", host="api.shop")
    assert status == 200 and json.loads(body)["app"].startswith("api-")

    # a good commit: api's route timeout changes -> web's outbound config changes
    c2 = repo.commit(mesh_files(ports, timeout="7s"), "api: longer timeout", author="Bo")
    rev2 = serve.wait_status(c2, {"deployed", "failed"})
    assert rev2["status"] == "deployed", rev2
    try:
        until(lambda: all_synced(serve, ids), 30, "synced after the second commit")
    except AssertionError:
        print(json.dumps(serve.ledger(), indent=1))  # what the failure needs to be read
        print(serve.proc.output() if serve.proc else "")
        raise
    after = serve.ledger()
    assert after["web.shop-0"]["ackedVersion"] != before["web.shop-0"]["ackedVersion"]
    assert after["web.shop-0"]["desiredRevision"] == c2
    detail = serve.get(f"/api/revisions/{rev2['id']}")
    assert detail["plan"]["proxies"]["changed"] == 1
    assert "Route" in " ".join(detail["plan"]["resourceNames"])
    acks = [r for r in serve.audit("deploy.ack") if r["subject"] == c2]
    assert acks and "web.shop-0" in acks[0]["data"]["proxies"]
    detected = next(r for r in serve.audit("revision.detected") if r["subject"] == c2)
    assert detected["data"]["author"].startswith("Bo ")
    assert detected["data"]["message"] == "api: longer timeout"
    assert detected["data"]["trigger"] in ("poll", "webhook", "manual")

    # the CLI shows it
    out = serve.cli("status")
    assert out.returncode == 0, out.stderr
    assert c2[:12] in out.stdout and "3 synced" in out.stdout
    out = serve.cli("proxies")
    assert out.returncode == 0 and "web.shop-0" in out.stdout and "SYNCED" in out.stdout
    out = serve.cli("audit", "list", "--limit", "200")
    assert out.returncode == 0 and "deploy.finished" in out.stdout

    # an invalid commit: nothing deployed, the audit says why, traffic still served
    bad = mesh_files(ports, timeout="soon")
    c3 = repo.commit(bad, "broken timeout")
    rev3 = serve.wait_status(c3, {"invalid", "deployed", "failed"})
    assert rev3["status"] == "invalid"
    detail = serve.get(f"/api/revisions/{rev3['id']}")
    assert any(f["severity"] == "error" and f["file"] == "routes/api.yaml"
               for f in detail["findings"])
    why = next(r for r in serve.audit("revision.validated") if r["subject"] == c3)
    assert why["data"]["valid"] is False and "routes/api.yaml" in why["data"]["reason"]
    assert serve.get("/api/status")["deployed"]["commit"] == c2
    assert {k: v["ackedVersion"] for k, v in serve.ledger().items()} == {
        k: v["ackedVersion"] for k, v in after.items()}
    status, _ = http_get(f"http://127.0.0.1:{web_out}/items", host="api.shop")
    assert status == 200
    out = serve.cli("history")
    assert "invalid" in out.stdout and "deployed" in out.stdout

    out = serve.cli("audit", "verify")
    assert out.returncode == 0, out.stderr
    out = serve.cli("audit", "show", "1")
    assert out.returncode == 0 and json.loads(out.stdout)["kind"] == "controller.started"
    out = serve.cli("audit", "export", "--format", "jsonl")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert verify_jsonl(iter(lines)).ok and len(lines) >= 20
    assert serve.token not in out.stdout
    assert serve.proc is not None and serve.proc.terminate() == 0
    # verify also works on the store without a controller
    db = f"sqlite:///{serve.data_dir / 'meshcd.db'}"
    # the shutdown ran whole and in reverse: the fleet's streams closed (their records),
    # then the controller's last record
    engine = open_engine(db)
    last = AuditLog(engine).list(limit=5)
    engine.dispose()
    assert last[0].kind == "controller.stopped", [r.kind for r in last]
    assert any(r.kind.startswith("proxy.") for r in last[1:]), [r.kind for r in last]
    out = serve.cli("audit", "verify", "--store", db)
    assert out.returncode == 0 and "intact" in out.stdout
    # and the CLI says plainly when the controller is not running
    out = serve.cli("status")
    assert out.returncode == 2 and "not running" in out.stderr and "Traceback" not in out.stderr
