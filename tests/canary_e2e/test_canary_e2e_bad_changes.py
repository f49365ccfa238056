"""Bad changes, end to end: real `meshcd serve` (canary strategy, `fast` preset), real proxies
joined with join tokens, real backend apps, open-loop mixed traffic through the proxies. Each
bad change is a commit; each must be judged failed, rolled back, and the traffic must show
its failures stop.

- 5xx: a Route fault abort (503 on every request) on the caller's outbound;
- deny: an AuthorizationPolicy on the backend that denies the caller (403 on its inbound);
- latency: a Route fault delay of 300 ms;
- nack: the backend gains a second Service port, whose inbound port is held by another
  process on the host: the config validates, the proxy cannot bind it and NACKs.

One mesh serves the four scenarios in turn (after each, the healthy config is committed again,
which every proxy already runs). Waits are generous; nothing asserts how fast a step was.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from canary_harness import (
    BAD_KINDS,
    KINDS,
    CanaryMesh,
    LoadGenerator,
    Outcome,
    Rec,
    Topology,
    run_bad_change,
    until,
)

# how each bad change shows in the traffic
SIGNATURE: dict[str, Callable[[Rec], bool]] = {
    "5xx": lambda r: r.status == 503 and not r.flaky,
    "deny": lambda r: r.status == 403 and KINDS[r.kind][2] != 403,
    "latency": lambda r: r.latency >= 0.3,
    "nack": lambda r: r.failed,
}
RATE = 40.0  # requests/s over 2 callers: ~20 per caller proxy, ~20 per backend proxy

# the check that must have failed, per bad change (from the judge's reason)
EXPECTED_CHECK = {"5xx": "error_rate", "deny": "denial_rate", "latency": "p99",
                  "nack": "NACK"}


@pytest.fixture(scope="module")
def mesh_and_load() -> Iterator[tuple[CanaryMesh, LoadGenerator]]:
    with tempfile.TemporaryDirectory(prefix="canary-e2e-") as tmp:
        mesh = CanaryMesh(Path(tmp), Topology.pick(2, 2))
        try:
            mesh.start()
            with mesh.load(RATE) as load:
                yield mesh, load
        finally:
            mesh.close()


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_change_is_caught_and_rolled_back(
        kind: str, mesh_and_load: tuple[CanaryMesh, LoadGenerator]) -> None:
    mesh, load = mesh_and_load
    before = mesh.versions()
    assert mesh.synced() and all(before.values())
    serving = mesh.running()
    until(lambda: len(load.since(time.time() - 3)) > 0, 30, "traffic before the change")

    out: Outcome = run_bad_change(mesh, load, kind, window=0, restore=False)

    # the revision: judged bad, rolled back
    assert out.status == "rejected", mesh.diagnose(out.commit)
    assert out.outcome == "rolled_back"
    audit = mesh.audit(subject=out.commit)
    judged = [r["data"] for r in audit if r["kind"] == "rollout.judged"]
    failed = [j for j in judged if str(j.get("outcome")).lower() == "failed"]
    assert failed, judged
    assert failed[0]["decision"] == "roll back"
    expected = EXPECTED_CHECK[kind]
    reason = failed[0]["reason"]
    assert expected.lower() in reason.lower() or failed[0].get("signal", "").lower() == "nack", (
        reason, failed[0])
    finished = [r["data"] for r in audit if r["kind"] == "rollout.finished"]
    assert len(finished) == 1 and finished[0]["outcome"] == "rolled_back", finished
    assert finished[0]["revisionStatus"] == "rejected"
    assert any(r["kind"] == "rollout.rollback" for r in audit)

    # every proxy back on its old version: in the ledger and by the proxy's own word
    assert out.back_on_old, mesh.diagnose(out.commit)
    assert mesh.versions() == before
    assert mesh.running() == serving

    # the traffic: the bad change hurt (except a NACK, which no proxy ever ran), and the
    # failures stopped once the rollout finished
    assert out.finished_at is not None
    until(lambda: len(load.since(out.finished_at + 4)) >= RATE, 60,  # type: ignore[operator]
          "traffic after the rollback")
    during = load.between(out.fetched_at, out.finished_at)
    after = load.since(out.finished_at + 1.0)  # requests due a second after it finished
    if kind == "nack":  # no proxy ever ran it: nothing failed the way the others fail
        assert not [r for r in during if any(SIGNATURE[k](r) for k in ("5xx", "deny"))]
    else:
        hit = [r for r in during if SIGNATURE[kind](r)]
        assert hit, f"{kind}: no request failed while the canary ran it"
        late = [r for r in after if SIGNATURE[kind](r)]
        # a 300 ms stall can happen on a busy machine; a canary still delayed would slow
        # about half of the requests (one of two callers)
        allowed = 0.02 * len(after) if kind == "latency" else 0
        assert len(late) <= allowed, (
            f"{len(late)} of {len(after)} requests failed after the rollback: "
            f"{[(round(r.t - out.finished_at, 2), r.status, round(r.latency, 3)) for r in late[:10]]}")

    # the healthy config again (what reverting the bad commit pushes): every proxy runs it
    fix = mesh.commit(mesh.healthy, f"revert the {kind} change")
    assert mesh.wait_status(fix, {"deployed", "rejected", "failed"}, 120)["status"] == "deployed"
    until(lambda: mesh.synced(fix), 60, "every proxy on the reverted head")
    assert mesh.versions() == before
