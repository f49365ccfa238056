"""`meshcd proxy join` takes its join token from a file or the environment, so that it is not on
a command line every user of the host can read (`ps`, /proc/<pid>/cmdline). Real processes
against a real controller."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from click.testing import CliRunner
from fleet_helpers import Controller, now, run, until

from proxy_runtime.agent.cli import join

ROOT = Path(__file__).resolve().parents[2]


async def _spawn(args: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy_runtime", "join", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert proc.stdout is not None
    seen = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        seen.append(line)
        if not line:
            raise AssertionError("proxy exited early:\n" + "".join(seen))
        if re.search(r"admin on 127\.0\.0\.1:\d+", line):
            return proc


def test_join_with_token_file_and_with_environment(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        boot = await ctl.start_bootstrap()
        procs: list[asyncio.subprocess.Process] = []
        try:
            common = ["--controller", boot.url, "--service", "web", "--namespace", "shop",
                      "--ca-fingerprint", "sha256:" + ctl.ca.bundle_fingerprint(),
                      "--admin-port", "0"]
            env_clean = {"MESHCD_JOIN_TOKEN": ""}
            # from a file, with the newline `echo` leaves
            token1 = ctl.tokens.create("web", "shop", now=now()).token
            token_file = tmp_path / "join.token"
            token_file.write_text(token1 + "\n")
            procs.append(await _spawn([*common, "--token-file", str(token_file), "--state-dir",
                                       str(tmp_path / "p1"), "--proxy-id", "web-1"], env_clean))
            # from the environment
            token2 = ctl.tokens.create("web", "shop", now=now()).token
            procs.append(await _spawn([*common, "--state-dir", str(tmp_path / "p2"),
                                       "--proxy-id", "web-2"], {"MESHCD_JOIN_TOKEN": token2}))
            await until(lambda: fleet.connected() == ["web-1", "web-2"], 20, "join")
            for proc, token in zip(procs, (token1, token2), strict=True):
                cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                assert token.encode() not in cmdline
                assert b"--token-file" in cmdline or b"web-2" in cmdline
        finally:
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGKILL)
                await p.wait()
            await ctl.stop()

    run(main(), timeout=90)


def test_token_sources_are_checked_and_the_help_says_why(tmp_path: Path) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    base = ["--controller", "https://127.0.0.1:1", "--service", "web", "--ca-fingerprint",
            "sha256:00", "--state-dir", str(tmp_path / "p")]
    r = runner.invoke(join, [*base, "--token", "mjt_x", "--token-file", str(empty)])
    assert r.exit_code == 2 and "at most one of --token and --token-file" in r.output
    r = runner.invoke(join, [*base, "--token-file", str(empty)])
    assert r.exit_code == 2 and "is empty" in r.output
    r = runner.invoke(join, [*base, "--token-file", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "cannot read --token-file" in r.output
    r = runner.invoke(join, ["--service", "web", "--state-dir", str(tmp_path / "p")],
                      env={"MESHCD_JOIN_TOKEN": ""})
    assert r.exit_code == 2 and "--token-file" in r.output and "MESHCD_JOIN_TOKEN" in r.output
    text = " ".join(runner.invoke(join, ["--help"]).output.split())
    assert "--token-file" in text and "MESHCD_JOIN_TOKEN" in text
    assert "visible to every user in `ps`" in text
