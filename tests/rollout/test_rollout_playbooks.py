"""The rollout engine as playbooks: event sequences in, command sequences out."""

from __future__ import annotations

import json

from rollout_playbook import DENYING, ERRORS_5XX, HEALTHY, SLOW, Playbook, Traffic, window

from reconciler.language.model import Analysis
from reconciler.rollout import (
    DEFAULT_STAGES,
    Finished,
    Nacked,
    Persist,
    Phase,
    Push,
    StageSpec,
    StatsReceived,
)

STAGE1 = "push stage a2=new-api"
STAGE2 = "push stage w1=new-web w2=new-web"
STAGE3 = "push stage a1=new-api w3=new-web w4=new-web"


def test_healthy_rollout_is_promoted_through_every_stage() -> None:
    pb = Playbook.fast()
    assert pb.start() == [STAGE1, "timer ack 30"]
    assert pb.ack("a2") == ["timer bake 3"]
    assert pb.traffic(3) == []
    assert pb.fire("bake") == ["judged Successful: promote", STAGE2, "timer ack 30"]
    assert pb.ack("w1") == []  # still waiting for w2
    assert pb.ack("w2") == ["timer bake 3"]
    pb.traffic(3)
    assert pb.fire("bake") == ["judged Successful: promote", STAGE3, "timer ack 30"]
    assert pb.ack("a1", "w3", "w4") == ["timer bake 3"]
    pb.traffic(3)
    assert pb.fire("bake") == ["judged Successful: promote", "finished promoted (deployed)"]
    assert pb.phase == "done"
    # Every transition was persisted, last the finished state.
    assert pb.persisted is not None and pb.persisted["outcome"]["outcome"] == "promoted"
    kinds = [a.kind for a in pb.audits()]
    assert kinds[0] == "rollout.started" and kinds[-1] == "rollout.finished"
    assert kinds.count("rollout.judged") == 3


def test_baseline_is_kept_per_service_and_judged_against_the_same_seconds() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(3)
    pb.fire("bake")
    judged = pb.audits("rollout.judged")[0].data
    api = judged["services"]["api.shop"]
    assert judged["canaries"] == ["a2"]
    assert judged["baseline"] == ["a1", "w1", "w2", "w3", "w4"]
    assert api["canary"]["requests"] == 300 and api["baseline"]["requests"] == 300
    assert api["canary"]["seconds"] == 3 and api["baseline"]["seconds"] == 3
    names = [c["name"] for c in api["checks"]]
    assert names == ["error_rate", "p99_latency", "error_rate_vs_baseline",
                     "denial_rate_vs_baseline", "p99_vs_baseline"]
    assert api["thresholds"]["maxErrorRatePercent"] == 1.0


def _to_stage2(pb: Playbook) -> None:
    pb.start()
    pb.ack("a2")
    pb.traffic(3)
    pb.fire("bake")
    pb.ack("w1", "w2")


def _rollback_line(*proxies: str) -> str:
    return "push rollback " + " ".join(f"{p}=old-{'api' if p[0] == 'a' else 'web'}"
                                       for p in sorted(proxies))


def test_5xx_on_canary_fails_and_rolls_back_with_the_old_snapshots() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    out = pb.traffic(3, canary=ERRORS_5XX)
    # Caught by an interim look, before the bake ends.
    assert out[0] == "judged Failed: roll back"
    assert out[1] == _rollback_line("a2", "w1", "w2")
    assert out[2] == "timer rollback 30"
    verdict = pb.audits("rollout.judged")[-1].data
    assert verdict["interim"] is True
    assert "error_rate" in verdict["reason"]
    rollback = pb.last_push()
    assert rollback.purpose == "rollback" and set(rollback.wait_for) == {"a2", "w1", "w2"}
    assert pb.ack_old("a2", "w1") == []
    assert pb.ack_old("w2") == ["finished rolled_back (rejected)"]
    fin = pb.finished()
    assert fin is not None and fin.revision_status == "rejected" and fin.next_revision is None


def test_5xx_judged_at_the_end_of_the_bake_without_interim_looks() -> None:
    pb = Playbook.fast(interim_alpha_divisor=0.0)
    _to_stage2(pb)
    assert pb.traffic(3, canary=ERRORS_5XX) == []
    out = pb.fire("bake")
    assert out[:2] == ["judged Failed: roll back", _rollback_line("a2", "w1", "w2")]


def test_denials_on_canary_fail_the_stage_although_403_is_a_4xx() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    out = pb.traffic(3, canary=DENYING)
    assert out[:2] == ["judged Failed: roll back", _rollback_line("a2")]
    reason = pb.audits("rollout.judged")[-1].data["reason"]
    assert "denial_rate_vs_baseline" in reason
    assert "error_rate" not in reason.replace("denial_rate", "")


def test_300ms_more_latency_on_canary_fails() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    out = pb.traffic(3, canary=SLOW)
    assert out[:2] == ["judged Failed: roll back", _rollback_line("a2", "w1", "w2")]
    web = pb.audits("rollout.judged")[-1].data["services"]["web.shop"]
    check = next(c for c in web["checks"] if c["name"] == "p99_vs_baseline")
    assert check["failed"] and check["test"].startswith("tail-exceedance")
    assert "mann-whitney" in check["note"]
    assert check["canary"] > 300 and check["baseline"] < 50


def test_a_nack_fails_the_stage_at_once() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    pb.traffic(1)
    out = pb.nack("w2", "route references an unknown cluster")
    assert out[:2] == ["judged Failed: roll back", _rollback_line("a2", "w1", "w2")]
    judged = pb.audits("rollout.judged")[-1].data
    assert "NACK" in judged["reason"] and judged["signal"] == "nack" and judged["proxy"] == "w2"
    # The audit still carries the stage's numbers so far.
    assert judged["stage"] == 2 and judged["canaries"] == ["a2", "w1", "w2"]
    assert judged["services"]["web.shop"]["canary"]["requests"] == 200


def test_a_nack_while_pushing_fails_before_any_bake() -> None:
    pb = Playbook.fast()
    pb.start()
    out = pb.nack("a2")
    assert out == ["judged Failed: roll back", _rollback_line("a2"), "timer rollback 30"]


def test_ack_timeout_fails_the_stage() -> None:
    pb = Playbook.fast()
    pb.start()
    out = pb.fire("ack")
    assert out[:2] == ["judged Failed: roll back", _rollback_line("a2")]
    assert "did not ACK" in pb.audits("rollout.judged")[-1].data["reason"]


def test_rollback_that_is_not_confirmed_finishes_on_its_timer() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.nack("a2")
    assert pb.fire("rollback") == ["finished rolled_back (rejected)"]
    assert "did not confirm" in pb.audits("rollout.finished")[-1].data["note"]


LOW = Traffic(rps=5)


def test_inconclusive_low_traffic_pauses_by_default() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(3, canary=LOW, baseline=LOW)
    assert pb.fire("bake") == [
        "judged Inconclusive: pause for an operator (onInconclusive: pause)"]
    assert pb.phase == "paused"
    # Resume bakes the stage again from scratch; now there is traffic.
    assert pb.op("resume") == ["operator resume by user:alice", "reply resume ok",
                               "timer bake 3"]
    pb.traffic(3)
    assert pb.fire("bake")[0] == "judged Successful: promote"


def test_inconclusive_extends_the_bake_a_bounded_number_of_times() -> None:
    pb = Playbook.fast(on_inconclusive="extend", max_extensions=2)
    pb.start()
    pb.ack("a2")
    pb.traffic(3, canary=LOW, baseline=LOW)
    assert pb.fire("bake") == ["judged Inconclusive: extend the bake (1 of 2)", "timer bake 3"]
    pb.traffic(3, canary=LOW, baseline=LOW)
    assert pb.fire("bake") == ["judged Inconclusive: extend the bake (2 of 2)", "timer bake 3"]
    pb.traffic(3, canary=LOW, baseline=LOW)
    assert pb.fire("bake") == [
        "judged Inconclusive: pause for an operator (still Inconclusive after 2 extensions)"]


def test_extension_keeps_the_evidence_and_can_then_pass() -> None:
    pb = Playbook.fast(on_inconclusive="extend", analysis=Analysis(min_requests=40))
    pb.start()
    pb.ack("a2")
    pb.traffic(3, canary=LOW, baseline=LOW)  # 15 requests
    assert pb.fire("bake")[0].startswith("judged Inconclusive")
    pb.traffic(6, canary=Traffic(rps=5), baseline=LOW)  # 15 + 30 = 45 >= 40
    assert pb.fire("bake")[0] == "judged Successful: promote"


def test_inconclusive_passes_when_the_policy_says_pass() -> None:
    pb = Playbook.fast(on_inconclusive="pass")
    pb.start()
    pb.ack("a2")
    pb.traffic(3, canary=LOW, baseline=LOW)
    assert pb.fire("bake") == ["judged Inconclusive: pass (onInconclusive: pass)", STAGE2,
                               "timer ack 30"]


def test_no_stats_at_all_is_error_and_follows_on_inconclusive() -> None:
    pb = Playbook.fast(on_inconclusive="pass")
    pb.start()
    pb.ack("a2")
    assert pb.fire("bake")[0] == "judged Error: pass (onInconclusive: pass)"


def test_operator_promote_moves_to_the_next_stage_now() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    assert pb.op("promote", "user:bob") == ["operator promote by user:bob", "reply promote ok",
                                             STAGE2, "timer ack 30"]
    assert pb.audits("rollout.operator")[-1].actor == "user:bob"


def test_operator_promote_full_pushes_everything_and_finishes_on_the_acks() -> None:
    pb = Playbook.fast()
    pb.start()
    out = pb.op("promote-full")
    assert out[:3] == ["operator promote-full by user:alice", "reply promote-full ok",
                       "push stage a1=new-api w1=new-web w2=new-web w3=new-web w4=new-web"]
    assert pb.ack("a2", "a1", "w1", "w2", "w3") == []
    assert pb.ack("w4") == ["finished promoted (deployed)"]


def test_operator_pause_stops_the_clock_and_resume_bakes_again() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    assert pb.op("pause") == ["operator pause by user:alice", "reply pause ok"]
    assert pb.engine is not None and pb.engine.state.timers == {}
    assert pb.op("pause") == ["reply pause refused"]
    assert pb.op("resume") == ["operator resume by user:alice", "reply resume ok",
                               "timer bake 3"]


def test_pause_during_push_resumes_waiting_for_acks() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.op("pause")
    assert pb.ack("a2") == []  # recorded, no bake while paused
    assert pb.op("resume")[-1] == "timer bake 3"


def test_operator_abort_rolls_back_now() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    out = pb.op("abort", "user:carol", "customer report")
    assert out == ["operator abort by user:carol", "reply abort ok",
                   _rollback_line("a2", "w1", "w2"), "timer rollback 30"]
    pb.ack_old("a2", "w1", "w2")
    fin = pb.finished()
    assert fin is not None and (fin.outcome, fin.revision_status) == ("aborted", "rejected")
    assert "user:carol" in fin.reason
    assert pb.op("resume") == ["reply resume refused"]


def test_a_rollback_requested_during_a_rollout_rolls_this_one_back_first() -> None:
    # `meshcd rollback --to REV` while a rollout runs: the shell sends abort, waits for the
    # Finished, then deploys REV.
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(1)
    out = pb.op("abort", "user:dave", "meshcd rollback --to rev-0")
    assert out[2] == _rollback_line("a2")
    assert pb.ack_old("a2") == ["finished aborted (rejected)"]


def test_new_commit_restarts_by_default() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    out = pb.commit("rev-3")
    assert out == [_rollback_line("a2", "w1", "w2"), "timer rollback 30"]
    assert pb.ack_old("a2", "w1", "w2") == ["finished superseded (superseded) next=rev-3"]


def test_new_commit_with_finish_then_next_lets_the_rollout_finish() -> None:
    pb = Playbook.fast(on_new_commit="finish-then-next")
    pb.start()
    pb.ack("a2")
    assert pb.commit("rev-3") == []
    assert pb.commit("rev-4") == []  # the newest waits; rev-3 is skipped
    pb.traffic(3)
    pb.fire("bake")
    pb.ack_pushed()
    pb.traffic(3)
    pb.fire("bake")
    pb.ack_pushed()
    pb.traffic(3)
    assert pb.fire("bake")[-1] == "finished promoted (deployed) next=rev-4"


def test_new_commit_after_a_failure_is_handed_over_when_the_rollback_is_done() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.nack("a2")
    assert pb.commit("rev-3") == []
    assert pb.ack_old("a2") == ["finished rolled_back (rejected) next=rev-3"]


def test_restart_mid_bake_repeats_the_stage_deterministically() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    pb.traffic(2)
    state = pb.persisted
    assert state is not None and state["phase"] == "baking" and state["stage"] == 1
    json.dumps(state)  # plain JSON
    out = pb.restart()
    # The whole stage is pushed again (the fleet does not touch proxies already on it) and
    # its ACKs awaited; the evidence is gone, so the bake starts over.
    assert out == ["push stage a2=new-api w1=new-web w2=new-web", "timer ack 30"]
    assert pb.audits("rollout.restored")[-1].data == {"phase": "baking", "stage": 2,
                                                      "repeated": True}
    assert pb.ack("a2", "w1", "w2") == ["timer bake 3"]
    pb.traffic(3)
    assert pb.fire("bake") == ["judged Successful: promote", STAGE3, "timer ack 30"]


def test_two_restarts_from_the_same_state_give_the_same_commands() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    assert pb.persisted is not None
    state = pb.persisted
    a = pb.restart()
    pb.persisted = state
    b = pb.restart()
    assert a == b


def test_restart_during_rollback_resends_the_rollback() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    pb.nack("w1")
    n = len(pb.commands)
    pb.ack_old("a2")  # an ACK alone is not persisted one by one ...
    assert not any(isinstance(c, Persist) for c in pb.commands[n:])
    assert pb.restart() == ["push rollback a2=old-api w1=old-web w2=old-web", "timer rollback 30"]
    assert pb.ack_old("w1") == []
    assert pb.ack_old("w2") == []
    # ... so after the restart a2 must ACK again (a proxy already on its old config does so
    # at once: the fleet sees it runs that version)
    assert pb.ack_old("a2") == ["finished rolled_back (rejected)"]


def test_acks_alone_are_not_persisted_one_by_one_and_a_restart_asks_again() -> None:
    pb = Playbook.fast({"web": 10}, stages=DEFAULT_STAGES)
    pb.start()
    pb.ack_pushed()
    pb.traffic(30)
    pb.fire("bake")  # stage 2 (10%: nothing new) is skipped; stage 3 (50%) pushes to 4 more
    waiting = sorted(pb.last_push().wait_for)
    assert len(waiting) == 4 and pb.engine is not None
    n = len(pb.commands)
    pb.ack(*waiting[:-1])
    assert not any(isinstance(c, Persist) for c in pb.commands[n:])  # no Persist per ACK
    # the restored engine repeats the stage: it re-sends the push and waits for all four
    # again (and for the stage's earlier canary)
    restarted = pb.restart()
    again = sorted(pb.engine.status(pb.now)["waitingForAck"])
    assert set(waiting) <= set(again) and sorted(pb.last_push().wait_for) == again
    assert any(line.startswith("push ") for line in restarted), restarted
    pb.ack(*again[:-1])
    assert pb.engine.status(pb.now)["waitingForAck"] == [again[-1]]
    pb.ack(again[-1])  # the last ACK starts the bake: that is persisted
    assert isinstance(pb.commands[-1], Persist) and pb.engine.state.phase == "baking"


def test_restart_while_paused_stays_paused() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.op("pause")
    # the restart handed every proxy the deployed config: the canary gets the new one again
    assert pb.restart() == ["push stage a2=new-api"]
    assert pb.phase == "paused"
    # resume waits for the canary's ACK of the new config before it bakes
    assert pb.op("resume")[-1].startswith("timer ack")
    assert pb.ack("a2")[-1] == "timer bake 3"


def test_canary_disconnecting_after_ack_fails_the_stage() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    pb.traffic(1)
    out = pb.disconnect("w1")
    assert out[0] == "judged Failed: roll back"
    # w1 is gone: the rollback is pushed to it (it gets it on reconnect) but not waited for.
    push = pb.last_push()
    assert push.assign["w1"] == "old-web" and "w1" not in push.wait_for


def test_canary_disconnecting_before_ack_is_dropped_and_replaced() -> None:
    pb = Playbook.fast()
    pb.start()
    out = pb.disconnect("a2")
    # a2 goes back to its old config; stage 1 is chosen again without it.
    assert out[0] == "push drop a2=old-api"
    assert out[1].startswith("push stage ") and "a2" not in out[1]
    assert out[2] == "timer ack 30"
    new_canary = pb.last_push().wait_for
    assert len(new_canary) == 1 and new_canary[0] != "a2"


def test_dropped_canary_does_not_block_a_stage_with_others() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(3)
    pb.fire("bake")
    pb.ack("w1")
    assert pb.disconnect("w2") == ["push drop w2=old-web", "timer bake 3"]


def test_baseline_disconnecting_is_not_a_failure() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    assert pb.disconnect("a1") == []
    pb.traffic(3)
    # No api baseline left: absolute guards only, still a pass.
    assert pb.fire("bake")[0] == "judged Successful: promote"
    api = pb.audits("rollout.judged")[-1].data["services"]["api.shop"]
    assert api["baseline"] is None
    assert "no baseline" in api["reason"]


def test_disconnected_proxies_are_not_canaries_and_get_the_config_at_the_last_stage() -> None:
    pb = Playbook.fast({"web": 3}, disconnected=("w1", "w2"))
    pb.start()
    assert pb.last_push().wait_for == ("w3",)
    pb.ack("w3")
    pb.traffic(3)
    out = pb.fire("bake")
    # Only one connected proxy: the next stages are the last one (everyone).
    assert out[1] == "push stage w1=new-web w2=new-web"
    assert pb.last_push().wait_for == ()


def test_failure_with_on_failure_pause_waits_for_the_operator() -> None:
    pb = Playbook.fast(on_failure="pause")
    pb.start()
    pb.ack("a2")
    out = pb.traffic(3, canary=ERRORS_5XX)
    assert out == ["judged Failed: pause for an operator (onFailure: pause)"]
    assert pb.phase == "paused"
    assert pb.engine is not None and pb.engine.state.paused is not None
    assert pb.engine.state.paused.from_phase is Phase.BAKING
    assert pb.op("abort")[2] == _rollback_line("a2")


def test_no_affected_proxy_finishes_at_once() -> None:
    pb = Playbook.fast({})
    assert pb.start() == ["finished promoted (deployed)"]


def test_stats_from_before_the_ack_and_duplicates_are_not_evidence() -> None:
    pb = Playbook.fast()
    pb.start()
    pb.traffic(0)
    pb.ack("a2")
    s = int(pb.now)
    pb.send(StatsReceived("a2", window(s - 1, ERRORS_5XX), pb.now + 1))  # before the bake
    pb.send(StatsReceived("a2", window(s + 1, HEALTHY), pb.now + 2))
    pb.send(StatsReceived("a2", window(s + 1, ERRORS_5XX), pb.now + 2))  # same second again
    pb.send(StatsReceived("a2", {"second": s + 2, "requests": "junk"}, pb.now + 3))
    pb.send(StatsReceived("nobody", window(s + 1, ERRORS_5XX), pb.now + 3))
    pb.fire("bake")
    api = pb.audits("rollout.judged")[-1].data["services"]["api.shop"]
    assert api["canary"]["requests"] == 100 and api["canary"]["errors"] == 0


def test_every_event_that_changes_state_ends_with_persist() -> None:
    pb = Playbook.fast()
    pb.start()
    assert isinstance(pb.commands[-1], Persist)
    n = len(pb.commands)
    pb.traffic(1)  # stats while pushing: no change, nothing persisted
    assert len(pb.commands) == n
    pb.ack("a2")
    assert isinstance(pb.commands[-1], Persist)


def test_default_stages_on_ten_proxies() -> None:
    pb = Playbook.fast({"web": 10}, stages=DEFAULT_STAGES)
    pb.start()
    for _ in range(3):
        pb.ack_pushed()
        pb.traffic(30)
        pb.fire("bake")
    # 1, 10% (1: nothing new, skipped), 50%, 100%
    assert [len(p.assign) for p in pb.pushes()] == [1, 4, 5]
    assert [a.data["stage"] for a in pb.audits("rollout.stage_skipped")] == [2]
    fin = pb.finished()
    assert isinstance(fin, Finished) and fin.outcome == "promoted"
    assert all(isinstance(p, Push) for p in pb.pushes())


def test_bad_change_at_the_last_stage_is_caught_by_absolute_guards() -> None:
    stages = (StageSpec(3.0, percent=100.0),)
    pb = Playbook.fast({"web": 2}, stages=stages)
    pb.start()
    pb.ack("w1", "w2")
    out = pb.traffic(3, canary=ERRORS_5XX)
    assert out[:2] == ["judged Failed: roll back", "push rollback w1=old-web w2=old-web"]


def test_status_shows_the_stage_and_live_numbers() -> None:
    pb = Playbook.fast()
    pb.start()
    assert pb.engine is not None
    st = pb.engine.status(pb.now)
    assert (st["phase"], st["stage"], st["waitingForAck"]) == ("pushing", 1, ["a2"])
    assert st["stages"] == ["1 proxy, bake 3s", "50%, bake 3s", "100%, bake 3s"]
    pb.ack("a2")
    pb.traffic(2)
    st = pb.engine.status(pb.now)
    assert st["phase"] == "baking" and st["canaries"] == ["a2"]
    assert st["bakeElapsed"] == 3.0
    live = st["live"]["services"]["api.shop"]
    assert live["canary"]["requests"] == 200 and live["baseline"]["requests"] == 200


def test_status_text_for_rollout_watch() -> None:
    from reconciler.rollout.view import render_status

    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(2)
    assert pb.engine is not None
    text = render_status(pb.engine.status(pb.now), width=10)
    lines = text.splitlines()
    assert lines[0] == "rollout rev-2 (replacing rev-1)"
    # 3 s of the 3 s bake have passed (the timer has not fired yet).
    assert lines[1] == "  stage 1 of 3 (1 proxy, bake 3s): baking 3/3s [##########]"
    assert lines[2] == "  canaries: a2; baseline: 5 proxies"
    assert lines[3].startswith("  api.shop") and "canary 200 req, 0.00% err" in lines[3]
    assert "baseline 200 req" in lines[3] and lines[3].endswith("-> Successful")
    pb.traffic(3, canary=ERRORS_5XX)
    assert pb.fire("bake")[0] == "judged Failed: roll back"
    pb.ack_old("a2")
    text = render_status(pb.engine.status(pb.now))
    assert "stage 1: Failed (api.shop: error_rate" in text
    assert "finished: rolled_back (revision rejected)" in text


def test_only_a_nack_of_the_old_config_refuses_the_rollback() -> None:
    pb = Playbook.fast()
    _to_stage2(pb)
    pb.nack("w1")  # the stage fails: every proxy that got the change goes back
    # w2's stage push is answered late, with a NACK of the *new* config: not a refusal
    assert pb.send(Nacked("w2", pb.new("w2"), "late", pb.now)) == []
    assert "w2" in pb.engine.state.rollback_pending  # type: ignore[union-attr]
    # a2 refuses its old config: audited, and not waited for any more
    pb.send(Nacked("a2", pb.old("a2") or "", "old config broken", pb.now))
    refused = pb.audits("rollout.rollback_refused")
    assert [a.data["proxy"] for a in refused] == ["a2"]
    assert pb.ack_old("w1") == []
    assert pb.ack_old("w2") == ["finished rolled_back (rejected)"]
