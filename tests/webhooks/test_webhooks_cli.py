"""`meshcd webhook test` against the real test server, and `meshcd webhook listen` as a real
subprocess fed by `meshcd webhook test`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from webhook_cases import CASES
from webhook_server import Server

from reconciler.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def _secret_file(tmp_path: Path, secret: bytes) -> str:
    path = tmp_path / "hook.secret"
    path.write_bytes(secret + b"\n")
    return str(path)


def run_test_cmd(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["webhook", "test", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("name", list(CASES))
def test_sample_for_the_watched_repo_is_accepted(server: Server, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    before = len(server.recorders[name].updates)
    code, out = run_test_cmd(
        "--forge",
        case.forge,
        "--secret-file",
        _secret_file(tmp_path, case.secret),
        "--url",
        server.url(name, case.forge),
        "--repo",
        case.watched_repo,
    )
    assert code == 0, out
    assert "202 accepted push_to_watched_branch" in out
    assert len(server.recorders[name].updates) == before + 1


def test_wrong_secret_exits_non_zero_with_the_reason(server: Server, tmp_path: Path) -> None:
    code, out = run_test_cmd(
        "--forge",
        "github",
        "--secret-file",
        _secret_file(tmp_path, b"wrong"),
        "--url",
        server.url("github", "github"),
    )
    assert code == 1 and "401 rejected bad_signature" in out


def test_other_repo_is_reported_as_ignored(server: Server, tmp_path: Path) -> None:
    case = CASES["gitlab"]
    base = f"http://127.0.0.1:{server.port}/"
    code, out = run_test_cmd(
        "--forge",
        "gitlab",
        "--secret-file",
        _secret_file(tmp_path, case.secret),
        "--url",
        base + "gitlab/",
    )
    assert code == 0 and "200 ignored repo_not_watched" in out and "note:" in out


def test_unreachable_receiver_exits_2(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    code, out = run_test_cmd(
        "--forge",
        "generic",
        "--secret-file",
        _secret_file(tmp_path, b"x"),
        "--url",
        f"http://127.0.0.1:{port}",
        "--timeout",
        "3",
    )
    assert code == 2 and "could not reach" in out


def test_missing_secret_file_is_a_usage_error(tmp_path: Path) -> None:
    code, out = run_test_cmd(
        "--forge",
        "generic",
        "--secret-file",
        str(tmp_path / "absent"),
        "--url",
        "http://127.0.0.1:1/",
    )
    assert code == 2 and "cannot read secret file" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_listen_prints_deliveries_sent_by_test(tmp_path: Path) -> None:
    secret = _secret_file(tmp_path, b"listen-secret")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), GL_SECRET="gl-secret")
    main = "from reconciler.cli.main import main; main()"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            main,
            "webhook",
            "listen",
            "--repo",
            "/srv/git/config.git",
            "--secret",
            f"generic=file:{secret}",
            "--secret",
            "gitlab=env:GL_SECRET",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "listen did not start"
                time.sleep(0.1)
        code, out = run_test_cmd(
            "--forge",
            "generic",
            "--secret-file",
            secret,
            "--url",
            f"http://127.0.0.1:{port}",
            "--repo",
            "file:///srv/git/config.git",
        )
        assert code == 0 and "202 accepted" in out, out
        code, out = run_test_cmd(
            "--forge", "gitea", "--secret-file", secret, "--url", f"http://127.0.0.1:{port}"
        )
        assert code == 1 and "403 rejected forge_not_configured" in out
    finally:
        proc.terminate()
        stdout, _ = proc.communicate(timeout=15)
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    updates = [line["update"] for line in lines if "update" in line]
    deliveries = [line["delivery"] for line in lines if "delivery" in line]
    assert [u["ref"] for u in updates] == ["refs/heads/main"]
    assert [(d["forge"], d["result"]) for d in deliveries] == [
        ("generic", "accepted"),
        ("gitea", "rejected"),
    ]
    assert "listen-secret" not in stdout
