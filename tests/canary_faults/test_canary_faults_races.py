"""Issue #6: operator commands racing each other and the engine, against a real `meshcd serve`
with real proxies.

- a burst of concurrent POSTs (pause, resume, promote, abort from several operator tokens at
  once) against one rollout: every call is answered 200 or 409, never 500; every accepted one
  left exactly one `rollout.operator` record naming its token, the refused ones none; the
  rollout ends once, and the revision's status, its outcome and the proxies agree;
- abort racing the natural end of the last stage's bake: either the abort wins (aborted,
  rejected, every proxy back on the old config) or the bake does (promoted, every proxy on
  the new one; the abort is refused), never a mix.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from canary_faults_helpers import FaultMesh, fault_mesh
from controller_helpers import until


@pytest.fixture(scope="module")
def mesh() -> Iterator[FaultMesh]:
    with fault_mesh("canary-faults-races-", 3, 1) as m:
        yield m


@pytest.fixture(autouse=True)
def _settled(mesh: FaultMesh) -> None:
    mesh.settle()  # whatever the previous test left running


def _check_final(mesh: FaultMesh, commit: str, before: dict[str, Any], previous: str) -> str:
    """The rollout ended once and everything agrees on how; returns the outcome."""
    rev = mesh.finish(commit)
    audit = mesh.audit(subject=commit)
    finished = [r["data"] for r in audit if r["kind"] == "rollout.finished"]
    assert len(finished) == 1, finished
    outcome = finished[0]["outcome"]
    assert rev["outcome"] == outcome
    expected = {"promoted": "deployed", "aborted": "rejected", "rolled_back": "rejected"}
    assert rev["status"] == expected[outcome] == finished[0]["revisionStatus"], (rev, finished)
    assert mesh.rollout_of(rev["id"])["outcome"]["outcome"] == outcome
    if outcome == "promoted":
        until(lambda: mesh.on(commit), 60, "every proxy on the promoted commit")
        after = mesh.versions()
        assert all(after[p] != before[p] for p in mesh.callers)
    else:
        until(lambda: mesh.on(previous) and mesh.versions() == before, 60,
              "every proxy back on the previous commit")
    assert mesh.rollout() is None
    return str(outcome)


@pytest.mark.parametrize("abort_from", [1, 2])
def test_concurrent_operator_commands(mesh: FaultMesh, abort_from: int) -> None:
    # three stages that bake long enough for the waves to meet a live rollout; the engine
    # still moves on its own between them (ACKs, bake ends after a resume)
    mesh.stages = (("1", 3.0), ("50%", 3.0), ("100%", 3.0))
    tokens = [mesh.token("operator", f"op{i}") for i in range(4)]
    before = mesh.versions()
    previous = mesh.ledger()[mesh.callers[0]]["desiredRevision"]
    commit = mesh.commit_healthy("healthy: operators all at once")
    mesh.wait_rollout(commit, {"pushing", "baking"}, stage=1)

    rng = random.Random(6)
    width = 12
    gate = threading.Barrier(width)
    # waves of `width` calls released together: pauses and resumes, one promote in each
    # (two move it to the last stage, the third finishes it), and from wave `abort_from` on
    # an abort racing that promote
    waves = []
    for w in range(4):
        actions = ["promote"] + (["abort"] if w >= abort_from else [])
        actions += rng.choices(("pause", "resume"), k=width - len(actions))
        rng.shuffle(actions)
        waves.append([(a, tokens[rng.randrange(len(tokens))]) for a in actions])

    def call(item: tuple[str, tuple[str, str]]) -> tuple[str, str, int, Any]:
        action, (secret, actor) = item
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait(5)
        status, doc = mesh.post(f"/api/rollout/{action}", {"reason": f"race {action}"},
                                token=secret)
        return action, actor, status, doc

    results: list[tuple[str, str, int, Any]] = []
    with ThreadPoolExecutor(width) as pool:
        for wave in waves:
            got = list(pool.map(call, wave))
            results += got
            print("wave:", [(a, s) for a, _, s, _ in got])
            time.sleep(0.2)
    assert {s for _, _, s, _ in results} <= {200, 409}, [r for r in results
                                                         if r[2] not in (200, 409)]
    accepted = Counter((actor, action) for action, actor, s, _ in results if s == 200)
    for _action, actor, status, doc in results:
        if status == 200:
            assert doc["accepted"] is True and doc["actor"] == actor, doc
        else:
            assert isinstance(doc.get("error"), str) and doc["error"], doc

    # the waves may leave it paused: one more operator ends it
    running = mesh.rollout()
    if running is not None and running["commit"] == commit:
        status, doc = mesh.post("/api/rollout/abort", {"reason": "end the race"})
        if status == 200:
            accepted[(doc["actor"], "abort")] += 1
        else:
            assert status == 409, doc
    outcome = _check_final(mesh, commit, before, previous)
    ops = mesh.ops(commit)
    recorded = Counter((r["actor"], r["data"]["action"]) for r in ops)
    assert recorded == accepted, (recorded, accepted)
    print(f"waves: {sum(accepted.values())} of {len(results)} accepted "
          f"({dict(Counter(a for _, a in accepted.elements()))}); outcome {outcome}")
    if any(action == "abort" for _, action in accepted):
        assert outcome == "aborted"
    # the accepted ones alternate sensibly: never two accepted pauses without a resume
    # between them, nor a resume that was not paused (the engine's order, as audited)
    paused = False
    for r in sorted(ops, key=lambda r: r["seq"]):
        action = r["data"]["action"]
        if action == "pause":
            assert not paused and r["data"]["phase"] in ("pushing", "baking"), r
            paused = True
        elif action == "resume":
            assert paused and r["data"]["phase"] == "paused", r
            paused = False
        elif action == "promote":
            paused = False
    mesh.verify_audit()


@pytest.mark.parametrize("offsets", [(-0.3, -0.1, -0.02), (-0.02, 0.0, 0.02),
                                     (0.02, 0.1, 0.3)])
def test_abort_racing_the_end_of_the_last_bake(mesh: FaultMesh,
                                               offsets: tuple[float, ...]) -> None:
    mesh.stages = (("1", 1.0), ("100%", 2.0))
    until(lambda: mesh.synced(), 60, "a synced fleet")
    before = mesh.versions()
    previous = mesh.ledger()[mesh.callers[0]]["desiredRevision"]
    commit = mesh.commit_healthy(f"healthy: abort at the end of the bake {offsets}")
    st = mesh.wait_rollout(commit, {"baking"}, stage=2)
    ends = float(st["bakeEnds"])  # the controller's clock is this machine's time.time()

    def abort_at(offset: float) -> tuple[int, Any]:
        delay = ends + offset - time.time()
        if delay > 0:
            time.sleep(delay)
        return mesh.post("/api/rollout/abort", {"reason": f"at {offset:+.2f}s"})

    with ThreadPoolExecutor(len(offsets)) as pool:
        answers = list(pool.map(abort_at, offsets))
    assert {s for s, _ in answers} <= {200, 409}, answers
    won = [doc for s, doc in answers if s == 200]
    assert len(won) <= 1, answers  # after one abort it is rolling back or over
    outcome = _check_final(mesh, commit, before, previous)
    assert outcome == ("aborted" if won else "promoted"), (answers, outcome)
    ops = mesh.ops(commit)
    assert len(ops) == len(won) and all(o["data"]["action"] == "abort" for o in ops)
    print(f"abort at {offsets}: {[s for s, _ in answers]} -> {outcome}")
