"""`meshcd rollout ...`, `meshcd rollback`, `meshcd history` against the rollout API served
over real HTTP, answering with a real RolloutEngine's status (cli_rollout_api.py)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cli_rollout_api import C1, C2, FIVE_XX, ApiServer, new_commit
from click.testing import CliRunner, Result

from reconciler.cli.main import cli

CLEAN_ENV: dict[str, str | None] = {"MESHCD_TOKEN": None, "MESHCD_API": None,
                                    "MESHCD_DATA_DIR": None}


def meshcd(api: ApiServer | str, *args: str, token: str | None = "view-secret",
           data_dir: Path | None = None, env: dict[str, str | None] | None = None) -> Result:
    url = api if isinstance(api, str) else api.url
    argv = [*args, "--api", url, "--data-dir", str(data_dir or Path("/nonexistent/meshcd"))]
    if token is not None:
        argv += ["--token", token]
    return CliRunner().invoke(cli, argv, env={**CLEAN_ENV, **(env or {})},
                              catch_exceptions=False)


def start(api: ApiServer, **kw: Any) -> None:
    with api.state.lock:
        api.state.start(2, C2, C1, **kw)


# --- status ---------------------------------------------------------------------------------


def test_status_shows_stage_progress_and_canary_vs_baseline(api: ApiServer) -> None:
    start(api)
    d = api.state.driver
    assert d is not None
    d.run_until(lambda d: d.engine.state.phase == "baking")
    d.step()
    d.step()  # 2 of the 3 s bake, one canary at 100 req/s
    st = d.status()
    (canary,) = st["canaries"]
    svc = next(t.service for t in d.targets if t.proxy_id == canary)
    others = sum(1 for t in d.targets if t.service == svc) - 1

    r = meshcd(api, "rollout", "status")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"rollout of revision 2 ({C2[:12]}), replacing {C1[:12]}, "
                               "started ")
    assert lines[1] == ("  stage 1 of 3 (1 proxy, bake 3s): baking 2/3s "
                        "[####################----------]")
    assert lines[2] == f"  canaries: {canary}; baseline: 5 proxies"
    # canary vs baseline over the same seconds, from the judge's numbers
    line = next(x for x in lines if x.startswith(f"  {svc}"))
    assert f"canary 200 req, 0.00% err, 0.00% denied, p99 9.9 ms | baseline {others * 200} req" \
        in line, line
    assert line.endswith("-> Successful")
    i = lines.index("  stages:")
    assert lines[i + 1] == "    1  1 proxy, bake 3s  [#############-------] baking 2/3s"
    assert lines[i + 2] == "    2  50%, bake 3s      [--------------------]"
    assert lines[i + 3] == "    3  100%, bake 3s     [--------------------]"
    assert "PINNED" not in r.stdout


def test_status_after_a_failed_check_names_it_and_the_pin_banner(api: ApiServer) -> None:
    start(api, canary=FIVE_XX)
    d = api.state.driver
    assert d is not None
    d.run_until(lambda d: d.engine.state.phase == "rolling_back")
    api.state.pin = {"revision": 1, "commit": C1, "actor": "token:otto#abcd1234",
                     "at": "2026-11-25T20:01:00Z", "reason": "5xx on cart"}
    r = meshcd(api, "rollout", "status")
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0] == (
        f"PINNED to revision 1 ({C1[:12]}) by token:otto#abcd1234: 5xx on cart; new commits "
        "are held until `meshcd rollout resume`")
    assert "stage 1 of 3 (1 proxy, bake 3s): rolling back" in r.stdout
    assert re.search(r"canary \d+ req, 5\.00% err", r.stdout)
    assert re.search(r"  stage 1: Failed \(\w+\.shop: error_rate: canary 5\.000% over 1\.000%",
                     r.stdout)
    # the per-second series: the canary errs every second, the baseline never
    assert re.search(r"    canary   \|@+\| max 5\.00%", r.stdout), r.stdout
    assert re.search(r"    baseline \|_+ *\| max 0\.00%", r.stdout), r.stdout


def test_status_nothing_running_pinned_and_json(api: ApiServer) -> None:
    r = meshcd(api, "rollout", "status")
    assert (r.exit_code, r.stdout) == (0, "no rollout in progress\n")
    api.state.pin = {"revision": 1, "commit": C1, "actor": "token:otto#abcd1234",
                     "at": "2026-11-25T20:01:00Z", "reason": ""}
    r = meshcd(api, "rollout", "status")
    assert r.exit_code == 0
    assert r.stdout == (f"PINNED to revision 1 ({C1[:12]}) by token:otto#abcd1234: no reason "
                        "given; new commits are held until `meshcd rollout resume`\n"
                        "no rollout in progress\n")
    start(api)
    r = meshcd(api, "rollout", "status", "--json")
    doc = json.loads(r.stdout)
    assert doc["pin"]["revision"] == 1 and doc["rollout"]["revisionId"] == 2
    assert doc["rollout"]["phase"] == "pushing"


# --- watch ----------------------------------------------------------------------------------


def test_watch_until_promoted_exits_0_with_the_final_status(api: ApiServer) -> None:
    start(api)
    api.state.advance_on_get = True
    r = meshcd(api, "rollout", "watch", "--interval", "0.05")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "\x1b[" not in out  # not a terminal: no screen clearing
    assert out.rstrip().endswith("revision 2: promoted")
    assert "  outcome: promoted (revision deployed): every stage passed" in out
    for k in (1, 2, 3):
        assert re.search(rf"  stage {k}: Successful \(", out), out
    assert "    3  100%, bake 3s     [####################] Successful" in out
    # a block per change of the rollout, not one per poll
    blocks = out.count("rollout of revision 2 (")
    assert 4 <= blocks < api.state.rollout_gets, (blocks, api.state.rollout_gets)
    assert api.state.revisions[2]["status"] == "deployed"
    # the final status came from the revision's rollout
    assert any(e["path"] == "/api/revisions/2/rollout" for e in api.state.log)


def test_watch_rolled_back_exits_3_with_the_failing_check(api: ApiServer) -> None:
    start(api, canary=FIVE_XX)
    api.state.advance_on_get = True
    r = meshcd(api, "rollout", "watch", "--interval", "0.05")
    assert r.exit_code == 3, r.output
    out = r.stdout
    assert out.rstrip().endswith("revision 2: rolled back")
    assert "  outcome: rolled back (revision rejected): " in out
    assert "  decided at stage 1: Failed (early look)" in out
    assert re.search(r"      failed error_rate: canary 5\.000%, limit 1\.000% \(p=\S+ < "
                     r"alpha \S+, binomial\)", out), out
    assert re.search(r"    \w+\.shop: Failed: canary \d+ req, 5\.00% err, 0\.00% denied, "
                     r"p99 9\.9 ms \| baseline \d+ req, 0\.00% err", out), out
    assert ("      thresholds: maxErrorRatePercent 1, maxP99LatencyMs 500, "
            "maxIncreaseOverBaselinePercent 50, minRequests 50, confidence 0.95") in out


def test_watch_aborted_and_superseded_exit_3(api: ApiServer) -> None:
    start(api)
    api.state.advance_on_get = True

    def abort(s: Any) -> None:
        from reconciler.rollout import Operator
        s.driver.feed(Operator("abort", "token:otto#abcd1234", s.driver.now, "looks off"))

    api.state.on_get[4] = abort
    r = meshcd(api, "rollout", "watch", "--interval", "0.05")
    assert r.exit_code == 3, r.output
    assert "outcome: aborted (revision rejected): aborted by token:otto#abcd1234: looks off" \
        in r.stdout
    assert r.stdout.rstrip().endswith("revision 2: aborted")

    with api.state.lock:
        api.state.revisions[3] = dict(api.state.revisions[2], id=3, status="planned",
                                      outcome=None)
        api.state.start(3, C2, C1)
        api.state.rollout_gets = 0
        api.state.on_get = {3: new_commit("4" * 40)}
    r = meshcd(api, "rollout", "watch", "--interval", "0.05")
    assert r.exit_code == 3, r.output
    assert "outcome: superseded (revision superseded)" in r.stdout
    assert f"  next: {'4' * 12}" in r.stdout


def test_watch_rides_out_a_controller_restart(api: ApiServer) -> None:
    start(api)
    api.state.advance_on_get = True
    port = int(api.httpd.server_address[1])
    again: list[ApiServer] = []

    def restart(state: Any) -> None:
        def swap() -> None:
            api.close()
            time.sleep(1.5)  # the watcher meets a refused connection meanwhile
            again.append(ApiServer(state, port=port))

        threading.Thread(target=swap, daemon=True).start()

    api.state.on_get[4] = restart
    try:
        r = meshcd(api, "rollout", "watch", "--interval", "0.05")
    finally:
        for server in again:
            server.close()
    assert again, "the API never came back"
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith(f"meshcd: the controller is not running or not reachable at "
                               f"{api.url} (")
    assert r.stderr.rstrip().endswith("retrying for up to 30s")
    assert r.stdout.rstrip().endswith("revision 2: promoted")


def test_watch_gives_up_at_once_when_never_reached() -> None:
    t0 = time.monotonic()
    r = meshcd(f"http://127.0.0.1:{_free_port()}", "rollout", "watch")
    assert r.exit_code == 2 and "not reachable" in r.stderr and "retrying" not in r.stderr
    assert time.monotonic() - t0 < 10


def test_watch_with_nothing_running(api: ApiServer) -> None:
    r = meshcd(api, "rollout", "watch")
    assert (r.exit_code, r.stdout) == (0, "no rollout in progress\n")
    r = meshcd(api, "rollout", "watch", "--once")
    assert (r.exit_code, r.stdout) == (0, "no rollout in progress\n")
    # --wait: a rollout that starts while it waits is followed to its end
    api.state.advance_on_get = True
    api.state.rollout_gets = 0
    api.state.on_get[3] = lambda s: s.start(2, C2, C1)
    r = meshcd(api, "rollout", "watch", "--wait", "30", "--interval", "0.05")
    assert r.exit_code == 0, r.output
    assert "waiting up to 30s for a rollout to start" in r.stdout
    assert r.stdout.rstrip().endswith("revision 2: promoted")


def test_watch_once_draws_once(api: ApiServer) -> None:
    start(api)
    r = meshcd(api, "rollout", "watch", "--once")
    assert r.exit_code == 0
    assert r.stdout.count("rollout of revision 2") == 1
    assert "stage 1 of 3 (1 proxy, bake 3s): pushing, waiting for 1 ACK(s)" in r.stdout
    assert api.state.rollout_gets == 1


# --- actions --------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "action", "message"), [
    (["promote"], "promote", "promote accepted at stage 1"),
    (["promote", "--full"], "promote-full", "promote-full accepted at stage 1"),
    (["pause"], "pause", "pause accepted at stage 1"),
    (["abort"], "abort", "abort accepted at stage 1"),
])
def test_actions_accepted(api: ApiServer, args: list[str], action: str, message: str) -> None:
    start(api)
    d = api.state.driver
    assert d is not None
    d.run_until(lambda d: d.engine.state.phase == "baking")
    r = meshcd(api, "rollout", *args, "--reason", "by hand", token="op-secret")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{message} (as token:otto#abcd1234)\n"
    post = api.state.log[-1]
    assert (post["path"], post["body"]) == (f"/api/rollout/{action}", {"reason": "by hand"})
    assert post["authorization"] == "Bearer op-secret"
    audit = [c for c in d.commands if getattr(c, "kind", "") == "rollout.operator"][-1]
    assert (audit.actor, audit.data["action"], audit.data["reason"]) == (
        "token:otto#abcd1234", action, "by hand")


def test_resume_pause_refusals_and_unpin(api: ApiServer) -> None:
    start(api)
    d = api.state.driver
    assert d is not None
    d.run_until(lambda d: d.engine.state.phase == "baking")
    r = meshcd(api, "rollout", "resume", token="op-secret")
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == "meshcd: resume refused: cannot resume while baking\n"
    assert meshcd(api, "rollout", "pause", token="op-secret").exit_code == 0
    r = meshcd(api, "rollout", "resume", token="op-secret")
    assert (r.exit_code, r.stdout) == (0, "resume accepted at stage 1 (as token:otto#abcd1234)\n")
    assert api.state.log[-1]["body"] == {}
    # no rollout: refused; no rollout but a pin: resume lifts it
    api.state.driver = None
    r = meshcd(api, "rollout", "abort", token="op-secret")
    assert r.exit_code == 1 and "abort refused: no rollout in progress" in r.stderr
    api.state.pin = {"revision": 1, "commit": C1, "actor": "x", "at": "", "reason": ""}
    r = meshcd(api, "rollout", "resume", token="op-secret")
    assert r.exit_code == 0 and r.stdout.startswith("unpinned:")
    assert api.state.pin is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("args", "action"), [
    (["promote"], "promote"), (["promote", "--full"], "promote-full"), (["pause"], "pause"),
    (["resume"], "resume"), (["abort"], "abort")])
def test_actions_auth_and_connection_errors_exit_2(api: ApiServer, args: list[str],
                                                   action: str) -> None:
    start(api)
    before = api.state.driver.engine.state.to_json() if api.state.driver else None
    r = meshcd(api, "rollout", *args, token="wrong-secret")
    assert r.exit_code == 2
    assert "401" in r.stderr and "the token was not accepted" in r.stderr
    r = meshcd(api, "rollout", *args, token="view-secret")
    assert r.exit_code == 2
    assert r.stderr == (f"meshcd: POST /api/rollout/{action}: 403 this needs the operator role "
                        "(the token's role is too small: give an operator (or admin) token "
                        "with --token or MESHCD_TOKEN)\n")
    r = meshcd(api, "rollout", *args, token=None)
    assert r.exit_code == 2 and "need an operator token" in r.stderr
    assert api.state.driver is not None and api.state.driver.engine.state.to_json() == before
    r = meshcd(f"http://127.0.0.1:{_free_port()}", "rollout", *args, token="op-secret")
    assert r.exit_code == 2
    assert "the controller is not running or not reachable" in r.stderr


# --- rollback -------------------------------------------------------------------------------


def test_rollback_request_body_and_output(api: ApiServer) -> None:
    r = meshcd(api, "rollback", "--to", "1", "--revert", "--reason", "5xx on cart",
               token="op-secret")
    assert r.exit_code == 0, r.output
    post = api.state.log[-1]
    assert post["path"] == "/api/rollback"
    assert post["body"] == {"to": 1, "fast": False, "revert": True, "reason": "5xx on cart"}
    assert r.stdout.splitlines() == [
        f"rolling back to revision 1: deploying commit {C1[:12]} as revision 3, in canary "
        "stages (as token:otto#abcd1234)",
        "  pinned: the fleet stays on revision 1; new commits are held until "
        "`meshcd rollout resume`",
        f"  revert commit {'3' * 40} pushed to the branch",
    ]
    assert api.state.pin is not None and api.state.pin["revision"] == 1

    r = meshcd(api, "rollback", "--fast", token="op-secret")
    assert r.exit_code == 0
    assert api.state.log[-1]["body"] == {"to": None, "fast": True, "revert": False, "reason": ""}
    assert "all at once (--fast)" in r.stdout and "revert commit" not in r.stdout


def test_rollback_refused_and_unknown_revision_exit_1(api: ApiServer) -> None:
    r = meshcd(api, "rollback", "--to", "99", token="op-secret")
    assert (r.exit_code, r.stderr) == (1, "meshcd: rollback refused: no revision 99\n")
    api.state.rollback_answer = (409, {"error": "--revert: the branch moved (main is at abc)"})
    r = meshcd(api, "rollback", "--revert", token="op-secret")
    assert r.exit_code == 1
    assert r.stderr == "meshcd: rollback refused: --revert: the branch moved (main is at abc)\n"
    r = meshcd(api, "rollback", token="view-secret")
    assert r.exit_code == 2 and "403" in r.stderr


def test_rollback_watch_aborts_the_rollout_then_follows_the_rollback(api: ApiServer) -> None:
    start(api)
    d = api.state.driver
    assert d is not None
    d.run_until(lambda d: d.engine.state.phase == "baking")
    api.state.advance_on_get = True
    r = meshcd(api, "rollback", "--watch", "--interval", "0.05", "--reason", "bad",
               token="op-secret")
    assert r.exit_code == 0, r.output
    assert api.state.revisions[2]["outcome"] == "aborted"
    assert api.state.revisions[3]["status"] == "deployed"
    assert api.state.revisions[3]["outcome"] == "promoted"
    out = r.stdout
    assert "waiting for revision 3 to roll out" in out  # while revision 2 rolled back
    assert f"rollout of revision 3 ({C1[:12]}), replacing {C2[:12]}" in out
    assert out.rstrip().endswith("revision 3: promoted")


def test_rollback_fast_watch_without_a_rollout(api: ApiServer) -> None:
    api.state.advance_on_get = True
    r = meshcd(api, "rollback", "--fast", "--watch", "--interval", "0.05", token="op-secret")
    assert r.exit_code == 0, r.output
    assert r.stdout.rstrip().endswith(f"revision 3 ({C1[:12]}) is deployed")


# --- history --------------------------------------------------------------------------------


def test_history_outcome_column_and_rollback_rows(api: ApiServer) -> None:
    with api.state.lock:
        api.state.revisions[2].update(status="rejected", outcome="rolled_back")
        api.state.revisions[3] = {**api.state.revisions[1], "id": 3, "status": "deployed",
                                  "trigger": "rollback", "outcome": "promoted",
                                  "rollback": {"target": 1}, "message": "rollback to 1"}
    r = meshcd(api, "history")
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0] == ["ID", "COMMIT", "STATUS", "OUTCOME", "TRIGGER", "AUTHOR", "MESSAGE"]
    assert rows[1][:7] == ["3", C1[:12], "deployed", "promoted", "rollback", "to", "#1"]
    assert rows[2][:5] == ["2", C2[:12], "rejected", "rolled_back", "webhook"]
    assert rows[3][:5] == ["1", C1[:12], "deployed", "-", "startup"]


# --- tokens ---------------------------------------------------------------------------------


def test_token_sent_on_gets_from_flag_env_and_data_dir(api: ApiServer, tmp_path: Path) -> None:
    meshcd(api, "rollout", "status", token="view-secret")
    assert api.state.log[-1]["authorization"] == "Bearer view-secret"
    r = meshcd(api, "history", token=None, env={"MESHCD_TOKEN": "op-secret"})
    assert r.exit_code == 0
    assert api.state.log[-1] == {"method": "GET", "path": "/api/revisions?limit=20",
                                 "authorization": "Bearer op-secret"}
    # the data dir's admin.token and controller.json, as on the controller's machine
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.token").write_text("admin-secret\n")
    (data / "controller.json").write_text(json.dumps({"api": api.url}))
    r = CliRunner().invoke(cli, ["rollout", "status", "--data-dir", str(data)], env=CLEAN_ENV)
    assert r.exit_code == 0 and r.stdout == "no rollout in progress\n"
    assert api.state.log[-1]["authorization"] == "Bearer admin-secret"


def test_reads_without_or_with_a_bad_token_say_what_is_needed(api: ApiServer) -> None:
    for args in (["rollout", "status"], ["rollout", "watch"], ["history"]):
        r = meshcd(api, *args, token=None)
        assert r.exit_code == 2, (args, r.output)
        assert "401" in r.stderr and "this needs a viewer token" in r.stderr
        assert "no token was sent" in r.stderr and "MESHCD_TOKEN" in r.stderr
        assert api.state.log[-1]["authorization"] is None
        r = meshcd(api, *args, token="nope")
        assert r.exit_code == 2 and "the token was not accepted" in r.stderr


def test_unknown_endpoint_is_reported_as_an_older_controller(api: ApiServer) -> None:
    r = meshcd(api.url + "/old", "rollout", "status")
    assert r.exit_code == 2
    assert "404 Not Found (no such endpoint: is the controller older than this CLI?)" in r.stderr


def test_help_texts_show_examples() -> None:
    runner = CliRunner()
    for args in (["rollout"], ["rollout", "watch"], ["rollout", "status"], ["rollback"],
                 ["rollout", "promote"], ["rollout", "pause"], ["rollout", "resume"],
                 ["rollout", "abort"]):
        r = runner.invoke(cli, [*args, "--help"], prog_name="meshcd")
        assert r.exit_code == 0, args
        assert r.stdout.startswith(f"Usage: meshcd {' '.join(args)} "), r.stdout[:80]
        assert "Example" in r.stdout and f"  meshcd {args[0]}" in r.stdout, args
    watch_help = runner.invoke(cli, ["rollout", "watch", "--help"]).stdout
    assert "0    promoted" in watch_help and "3    the watched rollout was rolled back" in watch_help
    assert "130  Ctrl-C" in watch_help
    top = runner.invoke(cli, ["--help"]).stdout
    assert re.search(r"^  rollback ", top, re.M) and re.search(r"^  rollout ", top, re.M)
