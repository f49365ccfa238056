"""Canary judge simulation: the real rollout engine and judge fed synthetic per-second stats
windows, to measure how often a healthy change is rolled back (false rollbacks) and how
often, and how fast, a bad change is caught.

    .venv/bin/python bench/judge_sim.py [--healthy 250] [--bad 100] [--proxies 20]
                                        [--rps 200] [--preset default] [--seed 1]
                                        [--interim-divisor 10] [--workers N] [--json out.json]

Traffic model ("noisy"), per proxy and second: requests ~ Poisson(rps / proxies); each proxy
has its own error rate (0.3% x a log-normal factor, sigma 0.3) and its own latency median
(20 ms x a log-normal factor, sigma 0.1; requests log-normal with sigma 0.5, so p99 is about
3x the median); 0.5% of requests are denied (legitimately, on every proxy); and each proxy-second
has a 1% chance of an error burst (10x its error rate). Canaries and baselines draw from the
same model; a bad change adds, on the canaries only: `5xx`: +2% 5xx; `denials`: +10% of
requests denied (403); `latency`: +300 ms on every request.

Each run is one whole rollout (default stages: 1 proxy, 10%, 50%, 100%, 30 s bakes) of one
service over --proxies proxies, with interim looks every second. Reported: healthy stages
judged and the share ending in a rollback (per stage and per rollout); for each bad kind the
share caught, and the time from the first canary ACK to the failure decision (median, p95).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.analysis.sample import LATENCY_BUCKETS
from reconciler.language.model import Analysis
from reconciler.rollout import (
    PRESETS,
    Acked,
    Audit,
    Finished,
    Push,
    RolloutEngine,
    RolloutSettings,
    RolloutSpec,
    StartTimer,
    StatsReceived,
    Target,
    TimerFired,
)

BAD = {
    "5xx": {"error_add": 0.02},
    "denials": {"denied_add": 0.10},
    "latency": {"latency_add": 0.300},
}
START = 1_700_000_000.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


class Proxy:
    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng = rng
        self.rate = rate
        self.error = 0.003 * math.exp(rng.gauss(0.0, 0.3))
        self.median = 0.020 * math.exp(rng.gauss(0.0, 0.1))
        self._cum: dict[float, list[float]] = {}

    def cum_weights(self, shift: float) -> list[float]:
        cw = self._cum.get(shift)
        if cw is None:
            cw = []
            for b in LATENCY_BUCKETS:
                x = b - shift
                cw.append(0.0 if x <= 0 else _phi((math.log(x) - math.log(self.median)) / 0.5))
            cw.append(1.0)
            self._cum[shift] = cw
        return cw

    def window(self, second: int, bad: dict[str, float] | None) -> dict[str, Any]:
        rng = self.rng
        n = poisson(rng, self.rate)
        bad = bad or {}
        err = self.error * (10.0 if rng.random() < 0.01 else 1.0) + bad.get("error_add", 0.0)
        den_p = 0.005 + bad.get("denied_add", 0.0)
        denied = e5 = 0
        for _ in range(n):
            u = rng.random()
            if u < den_p:
                denied += 1
            elif u < den_p + err:
                e5 += 1
        buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        for i in rng.choices(range(len(buckets)), cum_weights=self.cum_weights(
                bad.get("latency_add", 0.0)), k=n):
            buckets[i] += 1
        return {"second": second,
                "requests": {"2xx": n - denied - e5, "3xx": 0, "4xx": denied, "5xx": e5},
                "connection_failures": 0, "denials": denied, "latency_buckets": buckets,
                "latency_sum_seconds": 0.0}


def poisson(rng: random.Random, lam: float) -> int:
    if lam > 60:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def run_once(rng: random.Random, args: argparse.Namespace, bad: dict[str, float] | None,
             revision: str) -> dict[str, Any]:
    """One rollout. Returns outcome, stages judged, failed stage and decision time."""
    n = args.proxies
    proxies = {f"p{i:02d}": Proxy(rng, args.rps / n) for i in range(n)}
    targets = tuple(Target(p, "web.shop", "new", "old") for p in proxies)
    settings = RolloutSettings(PRESETS[args.preset], {"web.shop": Analysis()})
    spec = RolloutSpec(revision, "prev", targets, settings,
                       interim_alpha_divisor=args.interim_divisor)
    now = START
    eng, cmds = RolloutEngine.start(spec, now)
    timers: dict[str, float] = {}
    on_new: set[str] = set()
    first_ack: float | None = None
    judged = 0
    decision: float | None = None
    failed_stage: int | None = None
    outcome: str | None = None
    checks: list[str] = []

    def take(cs: list[Any]) -> list[Any]:
        nonlocal judged, decision, failed_stage, outcome
        follow: list[Any] = []
        for c in cs:
            if isinstance(c, StartTimer):
                timers[c.token] = now + c.seconds
            elif isinstance(c, Push):
                if c.purpose == "stage":
                    on_new.update(c.assign)
                    follow += [Acked(p, "new", now) for p in c.wait_for]
                elif c.purpose == "rollback":
                    on_new.difference_update(c.assign)
                    follow += [Acked(p, "old", now) for p in c.wait_for]
            elif isinstance(c, Audit) and c.kind == "rollout.judged":
                judged += 1
                if c.data["outcome"] == "Failed" and decision is None:
                    decision = now
                    failed_stage = int(c.data.get("stage", 0))
                    for v in c.data.get("services", {}).values():
                        checks.extend(x["name"] for x in v["checks"] if x["failed"])
                    if c.data.get("interim"):
                        checks.append("(interim)")
            elif isinstance(c, Finished):
                outcome = c.outcome
        return follow

    pending = take(cmds)
    while pending:
        pending = take(eng.handle(pending.pop(0))) + pending
    first_ack = now
    second = int(now)
    while outcome is None:
        second += 1
        now = float(second)
        for pid, px in proxies.items():
            w = px.window(second - 1, bad if pid in on_new else None)
            pending = take(eng.handle(StatsReceived(pid, w, now)))
            while pending:
                pending = take(eng.handle(pending.pop(0))) + pending
            if outcome is not None:
                break
        for token, at in sorted(timers.items(), key=lambda kv: kv[1]):
            if at <= now and outcome is None:
                del timers[token]
                pending = take(eng.handle(TimerFired(token, now)))
                while pending:
                    pending = take(eng.handle(pending.pop(0))) + pending
        if eng.state.phase == "paused" and outcome is None:
            outcome = "paused"  # waiting for an operator (onInconclusive: pause)
        if second - START > 3600:
            raise RuntimeError("rollout did not finish within an hour of simulated time")
    return {"outcome": outcome, "judged": judged, "failed_stage": failed_stage,
            "failed_checks": checks,
            "decision_s": None if decision is None else decision - (first_ack or START)}


def _job(job: tuple[argparse.Namespace, dict[str, float] | None, str]) -> dict[str, Any]:
    args, change, name = job
    # Each run has its own seed, so results do not depend on the number of workers.
    rng = random.Random(f"{args.seed}:{name}")
    return run_once(rng, args, change, name)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--healthy", type=int, default=250, help="healthy rollouts (4 stages each)")
    ap.add_argument("--bad", type=int, default=100, help="rollouts per bad-change kind")
    ap.add_argument("--proxies", type=int, default=20)
    ap.add_argument("--rps", type=float, default=200.0, help="requests/s over all proxies")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--interim-divisor", type=float, default=10.0,
                    help="alpha divisor of the looks before a bake ends (0: no interim looks)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    t0 = time.perf_counter()
    jobs = [(args, None, f"healthy-{i}") for i in range(args.healthy)]
    for kind, change in BAD.items():
        jobs += [(args, change, f"{kind}-{i}") for i in range(args.bad)]
    if args.workers > 1:
        with multiprocessing.Pool(args.workers) as pool:
            runs = pool.map(_job, jobs, chunksize=4)
    else:
        runs = [_job(j) for j in jobs]
    by_name = {j[2]: r for j, r in zip(jobs, runs, strict=True)}
    healthy = [by_name[f"healthy-{i}"] for i in range(args.healthy)]
    stages = sum(r["judged"] for r in healthy)
    false_rb = sum(1 for r in healthy if r["outcome"] == "rolled_back")
    paused = sum(1 for r in healthy if r["outcome"] == "paused")
    why: dict[str, int] = {}
    for r in healthy:
        for name in r["failed_checks"] + ([f"stage {r['failed_stage']}"] if r["failed_stage"] else []):
            why[name] = why.get(name, 0) + 1
    result: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "config": {"proxies": args.proxies, "rps": args.rps, "preset": args.preset,
                   "seed": args.seed, "interim_divisor": args.interim_divisor},
        "healthy": {"rollouts": len(healthy), "stages_judged": stages,
                    "false_rollbacks": false_rb, "paused": paused,
                    "false_rollback_rate_per_rollout": false_rb / max(1, len(healthy)),
                    "false_rollback_rate_per_stage": false_rb / max(1, stages),
                    "false_rollback_checks": dict(sorted(why.items()))},
        "bad": {},
    }
    for kind in BAD:
        runs = [by_name[f"{kind}-{i}"] for i in range(args.bad)]
        caught = [r for r in runs if r["outcome"] == "rolled_back"]
        times = [r["decision_s"] for r in caught if r["decision_s"] is not None]
        result["bad"][kind] = {
            "runs": len(runs), "detected": len(caught),
            "detection_rate": len(caught) / max(1, len(runs)),
            "caught_at_stage_1": sum(1 for r in caught if r["failed_stage"] == 1),
            "decision_s_median": statistics.median(times) if times else None,
            "decision_s_p95": pct(times, 0.95),
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    m = result["machine"]
    print(f"cpu: {m['cpu']}, cores: {m['cores']}, python {m['python']}")
    print(f"{args.proxies} proxies, {args.rps:g} req/s, preset {args.preset}, seed {args.seed}, "
          f"interim alpha divisor {args.interim_divisor:g}")
    h = result["healthy"]
    print(f"healthy: {h['rollouts']} rollouts, {h['stages_judged']} stages judged, "
          f"{h['false_rollbacks']} false rollbacks "
          f"({100 * h['false_rollback_rate_per_stage']:.2f}% per stage, "
          f"{100 * h['false_rollback_rate_per_rollout']:.2f}% per rollout)"
          + (f", {paused} paused as inconclusive" if paused else ""))
    if why:
        print("  failed checks in healthy runs: "
              + ", ".join(f"{k} x{v}" for k, v in sorted(why.items())))
    print(f"{'bad change':<10} {'runs':>5} {'detected':>9} {'at stage 1':>11} "
          f"{'decision p50':>13} {'p95':>7}")
    for kind, b in result["bad"].items():
        p50 = "-" if b["decision_s_median"] is None else f"{b['decision_s_median']:.1f}s"
        p95 = "-" if b["decision_s_p95"] is None else f"{b['decision_s_p95']:.1f}s"
        print(f"{kind:<10} {b['runs']:>5} {100 * b['detection_rate']:>8.1f}% "
              f"{b['caught_at_stage_1']:>11} {p50:>13} {p95:>7}")
    print(f"({result['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
