"""Issue #17 finding 10 with a real `meshcd serve`: a damaged SQLite file stops it with one
line saying what is wrong and what to do; a full disk (a small tmpfs, root only) keeps it up,
answers join-token requests with a clear temporary error, shows `degraded`, and writes
nothing half: once space is back everything works and the audit chain verifies."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from controller_helpers import ConfigRepo, Processes, Serve, mesh_files, until


def damage_page_of(db: Path, table: str) -> None:
    """Overwrite the root page of `table` with garbage (SQLite closed, WAL checkpointed)."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                       (table,)).fetchone()[0]
    con.close()
    with db.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 64)


def test_serve_on_a_damaged_database_says_so_in_one_line(tmp_path: Path,
                                                         procs: Processes) -> None:
    repo = ConfigRepo(tmp_path / "mesh.git")
    repo.commit(mesh_files({"api": [1]}), "first")
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=3600,
                  extra={"trust_domain": "ctl.test"})
    serve.start()
    assert serve.proc is not None and serve.proc.terminate() == 0
    damage_page_of(tmp_path / "ctl" / "meshcd.db", "audit_records")
    again = subprocess.run([str(Path(sys.executable).parent / "meshcd"), "serve", "--config",
                            str(serve.write_settings())], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 2, again
    assert "Traceback" not in again.stderr
    lines = [ln for ln in again.stderr.splitlines() if ln.startswith("meshcd serve:")]
    assert len(lines) == 1, again.stderr
    assert "is damaged" in lines[0] and "restore it from a backup" in lines[0]
    assert str(tmp_path / "ctl" / "meshcd.db") in lines[0]
    assert len(again.stderr.strip().splitlines()) <= 3, again.stderr


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> object:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that fills up) needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def test_full_disk_keeps_the_controller_up_with_clear_errors(tmp_path: Path,
                                                             procs: Processes) -> None:
    repo = ConfigRepo(tmp_path / "mesh.git")
    first = repo.commit(mesh_files({"api": [1]}), "first")
    with small_tmpfs(tmp_path / "data", "24m") as data:
        serve = Serve(procs, data / "ctl", repo.url, poll_interval=0.5,
                      extra={"trust_domain": "ctl.test"})
        serve.start()
        serve.wait_status(first, {"deployed"})
        assert serve.get("/api/status")["health"]["status"] == "ok"
        filler = fill(data)
        # a commit with a big blob: the fetch needs room the disk does not have
        files = mesh_files({"api": [1]}, timeout="7s")
        files["big.bin"] = os.urandom(3 << 20).hex()
        second = repo.commit(files, "big")
        # join tokens until the database needs a page it cannot get
        answers = []
        for _ in range(400):
            status, doc = serve.post("/api/tokens/join", {"service": "api", "namespace": "shop"})
            answers.append((status, doc))
            if status != 201:
                break
        status, doc = answers[-1]
        assert status == 503, answers[-1]
        assert doc["temporary"] is True and "no space left" in doc["error"], doc
        health = until(lambda: (h := serve.get("/healthz"))["status"] == "degraded" and h,
                       20, "healthz degraded")
        text = " ".join(health["problems"])
        assert "storage: no space left" in text
        until(lambda: "fetch failing" in " ".join(serve.get("/api/status")["health"]["problems"]),
              30, "the failed fetch in status")
        status_doc = serve.get("/api/status")
        assert status_doc["fetch"]["consecutive_failures"] >= 1
        assert status_doc["fetch"]["healthy"] is False and status_doc["fetch"]["last_error"]
        assert status_doc["health"]["status"] == "degraded"
        shown = serve.cli("status")
        assert shown.returncode == 0 and "health:      DEGRADED - storage: no space left" \
            in shown.stdout, shown
        assert serve.proc is not None and serve.proc.popen.poll() is None  # still up
        assert "Traceback" not in serve.proc.output()  # clear lines, not stack dumps
        filler.unlink()
        # space is back: writes work, the commit deploys, status is ok, the chain verifies
        until(lambda: serve.post("/api/tokens/join", {"service": "api",
                                                      "namespace": "shop"})[0] == 201,
              30, "a join token again")
        assert serve.post("/api/refresh", {})[0] == 202  # not waiting for the back-off
        serve.wait_status(second, {"deployed"}, 60)
        until(lambda: serve.get("/healthz")["status"] == "ok", 30, "healthz ok again")
        verify = serve.cli("audit", "verify")
        assert verify.returncode == 0 and "intact" in verify.stdout, verify
        serve.proc.terminate()
