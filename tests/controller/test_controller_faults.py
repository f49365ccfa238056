"""Faults, end to end with real processes: the controller SIGKILLed in the middle of a
deploy and restarted; the controller away for ~30 s while traffic flows through the proxies;
a proxy SIGKILLed and restarted while the controller is away."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from controller_helpers import (
    NS,
    ConfigRepo,
    Processes,
    Serve,
    admin_port,
    free_static_port,
    http_get,
    mesh_files,
    outbound_port,
    until,
)


def synced(serve: Serve, ids: set[str], revision: str | None = None) -> bool:
    try:
        ledger = serve.ledger()
    except OSError:
        return False
    return ids <= set(ledger) and all(
        ledger[i]["state"] == "SYNCED" and ledger[i]["ackedVersion"]
        and (revision is None or ledger[i]["desiredRevision"] == revision) for i in ids)


def wait_synced(serve: Serve, ids: set[str], revision: str | None, timeout: float, what: str,
                procs: Processes) -> None:
    """`synced`, or a failure that shows the ledger and every process's output."""
    try:
        until(lambda: synced(serve, ids, revision), timeout, what)
    except AssertionError as e:
        outputs = "\n".join(f"--- {' '.join(p.args[1:3])}\n{p.output()}" for p in procs.procs)
        raise AssertionError(f"{e}\nledger: {serve.ledger()}\n{outputs}") from None


def test_controller_killed_during_deploy_resumes_it(tmp_path: Path, procs: Processes) -> None:
    ports = {"web": [free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(mesh_files(ports), "first")
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=0.5)
    serve.start()
    serve.wait_status(c1, {"deployed"})
    web = serve.join_proxy(f"web.{NS}-0", "web", tmp_path / "p-web")
    serve.join_proxy(f"api.{NS}-0", "api", tmp_path / "p-api")
    ids = {f"web.{NS}-0", f"api.{NS}-0"}
    wait_synced(serve, ids, None, 60, "first sync", procs)
    # web cannot answer while stopped: the deploy of c2 (which changes web) hangs there
    web.popen.send_signal(signal.SIGSTOP)
    try:
        c2 = repo.commit(mesh_files(ports, timeout="9s"), "second")
        serve.wait_status(c2, {"deploying"}, 30)
        assert serve.proc is not None
        serve.proc.kill()  # SIGKILL mid-deploy
    finally:
        web.popen.send_signal(signal.SIGCONT)
    serve.start()  # same data dir and ports
    rev = serve.wait_status(c2, {"deployed", "failed"}, 60)
    assert rev["status"] == "deployed", rev
    # a proxy reconnects with exponential backoff and full jitter (capped at 2 s here by
    # --reconnect-max; 30 s by default)
    wait_synced(serve, ids, c2, 120, "every proxy on c2 after the restart", procs)
    status = serve.get("/api/status")
    assert status["deployed"]["commit"] == c2 and status["epoch"] == 2
    kinds = [r["kind"] for r in serve.audit() if r["subject"] == c2]
    assert "deploy.started" in kinds and "deploy.resumed" in kinds and "deploy.finished" in kinds
    started = [r["data"]["epoch"] for r in serve.audit("controller.started")]
    assert sorted(started) == [1, 2]
    out = serve.cli("audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr


def test_controller_away_under_load_and_proxy_restart(tmp_path: Path, procs: Processes) -> None:
    ports = {"web": [free_static_port()], "api": [free_static_port(), free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(mesh_files(ports), "first")
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=0.5)
    serve.start()
    serve.wait_status(c1, {"deployed"})
    apps = [f"{n}-{i}=127.0.0.1:{p + 1000}" for n, ps in ports.items() for i, p in enumerate(ps)]
    procs.start([sys.executable, "-m", "demo.sample_app",
                 *[a for x in apps for a in ("--app", x)]]).wait_for("listening")
    states = {f"{n}.{NS}-{i}": tmp_path / f"p-{n}-{i}"
              for n, ps in ports.items() for i in range(len(ps))}
    proxies = {pid: serve.join_proxy(pid, pid.split(".")[0], d) for pid, d in states.items()}
    ids = set(states)
    until(lambda: synced(serve, ids), 60, "first sync")

    # small steady load: web's app calling api through web's proxy (its outbound port)
    web_out = outbound_port(ports, f"web.{NS}-0")
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status, _ = http_get(f"http://127.0.0.1:{web_out}/x", host="api.shop", timeout=5)
            except OSError:
                status = 0
            results.append(status)
            time.sleep(0.05)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        until(lambda: len(results) >= 10, 10, "load started")
        assert serve.proc is not None
        serve.proc.kill()
        away_from = len(results)
        time.sleep(30)  # the controller is away; the proxies keep serving what they have
        served_while_away = len(results) - away_from
        serve.start()
        until(lambda: synced(serve, ids), 120, "every proxy back and synced")
        time.sleep(1)
    finally:
        stop.set()
        loader.join(10)
    assert served_while_away >= 100
    failed = [s for s in results if s != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {set(failed)}"

    # a proxy SIGKILLed and restarted while the controller is away: it serves its persisted
    # config at once (static stability), then resyncs when the controller is back
    proxies[f"web.{NS}-0"].kill()
    assert serve.proc is not None and serve.proc.terminate() == 0
    web = serve.restart_proxy(f"web.{NS}-0", "web", states[f"web.{NS}-0"])
    status, _ = http_get(f"http://127.0.0.1:{admin_port(web)}/ready")
    assert status == 200
    status, body = http_get(f"http://127.0.0.1:{web_out}/again", host="api.shop")
    assert status == 200 and b'"app": "api-' in body
    serve.start()
    until(lambda: synced(serve, ids), 120, "resynced after the restarts")
    c2 = repo.commit(mesh_files(ports, timeout="8s"), "second")
    assert serve.wait_status(c2, {"deployed", "failed"})["status"] == "deployed"
    until(lambda: synced(serve, ids, c2), 30, "the restarted proxy acks the next commit")
    kinds = {r["kind"] for r in serve.audit()}
    assert {"proxy.connected", "proxy.disconnected", "deploy.ack"} <= kinds
    out = serve.cli("audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr
