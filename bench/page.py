"""Server time of every web page with a big store behind it (issue #8's target: p99 < 200 ms).

    .venv/bin/python bench/page.py [--records 1000000] [--proxies 10000] [--revisions 1000]
                                   [--loads 50] [--backends sqlite,postgres] [--json out.json]
                                   [--read-model controller|demo]

For each backend: fills a fresh store with `--records` audit records (append_many in bursts of
20,000: a valid chain), then `--proxies` proxies and `--revisions` revisions behind the read
model the pages are served from:

- `controller` (the default): what `meshcd serve` serves, `PagesView` over a
  controller assembled from the real parts (bench/controller_model.py): a `RevisionStore`
  with the revisions, their plans, findings, deploy results and stored rollouts, a
  `FleetServer` whose ledger was loaded from its `LedgerStore` and then connected, a
  `CanaryDeployer` with a live rollout of the newest revision (a real `RolloutEngine` in its
  third stage, with its series), a `Pipeline`, and an asyncio loop in a thread that the
  fleet, the rollout and the pin are read on;
- `demo`: the pages' demo tables (`SqlPagesData`).

Then it verifies the chain once (the badge's background job, so it does not run during the
measurement), loads each page `--loads` times through a real uvicorn on 127.0.0.1 and reports
the server's own time per request (a middleware's `Server-Timing`), p50 and p99. PostgreSQL
comes from MESHCD_TEST_POSTGRES_URL (default postgres@127.0.0.1/test); a throwaway database is
created and dropped.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy.engine import Engine
from starlette.requests import Request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/controller_model.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # pages fake

from pages_fake import SqlPagesData
from pages_seed import canary_stages, seed_fleet, seed_revisions, series
from postgres import postgres_database

from reconciler.audit import AuditEntry, AuditLog
from reconciler.auth import ApiTokens
from reconciler.pages import PagesSettings
from reconciler.pages.chain_status import ChainStatus
from reconciler.pages.router import make_pages_router
from reconciler.store import open_engine, sqlite_url

KINDS = (
    "revision.detected",
    "plan.made",
    "deploy.ack",
    "proxy.connected",
    "deploy.nack",
    "rollout.promote",
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fill_audit(audit: AuditLog, records: int, batch: int = 20_000) -> float:
    started = time.perf_counter()
    done = 0
    while done < records:
        n = min(batch, records - done)
        entries = [
            AuditEntry(
                actor=f"proxy:web-{(done + i) % 997}" if (done + i) % 3 else "scheduler",
                kind=KINDS[(done + i) % len(KINDS)],
                subject=f"revision {(done + i) % 1000}",
                data={"n": done + i, "version": f"{(done + i) * 7919:x}"},
            )
            for i in range(n)
        ]
        # One second of trail per 100 records: time filters have a real range to work on.
        audit.append_many(entries, now=T0 + timedelta(seconds=done // 100), redact=False)
        done += n
        print(f"\r  audit records: {done}/{records}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - started


def pages(records: int, revisions: int, proxies: int, done_revision: int) -> dict[str, str]:
    mid = max(records // 2, 2)
    since = (T0 + timedelta(seconds=records // 200)).strftime("%Y-%m-%dT%H:%M:%S")
    until = (T0 + timedelta(seconds=records // 200 + 600)).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "overview": "/",
        "overview_live": "/live/overview",
        "revisions": "/revisions",
        "revisions_filtered": "/revisions?outcome=rejected",
        "revision_detail": f"/revisions/{revisions}",
        "revision_detail_done": f"/revisions/{done_revision}",
        "fleet": "/fleet",
        "fleet_filtered_sorted": "/fleet?state=NACKED&sort=last_seen&order=desc",
        "fleet_last_page": f"/fleet?offset={max(proxies - 100, 0)}",
        "audit": "/audit",
        "audit_kind": "/audit?kind=deploy.nack",
        "audit_deep_page": f"/audit?before={mid}",
        "audit_subject": "/audit?subject=revision+500",
        "audit_actor_range": f"/audit?actor=scheduler&since={since}&until={until}",
        "audit_badge": "/live/audit-badge",
    }


@contextmanager
def serve(app: Any) -> Iterator[str]:
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_backend(url: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    engine = open_engine(url)
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        return _run_backend(engine, args, stack)


def _fill_demo(engine: Engine, args: argparse.Namespace) -> tuple[Any, int, str]:
    data = SqlPagesData(engine)
    now = datetime.now(UTC)
    seed_revisions(data, args.revisions, now=now)
    seed_fleet(data, args.proxies, now=now)
    data.start_rollout(args.revisions, canary_stages(args.proxies), now=now)
    data.add_points(args.revisions, series(600, bad_after=400))
    return data, max(args.revisions - 1, 1), "demo read model (SqlPagesData)"


def _fill_controller(engine: Engine, audit: AuditLog, args: argparse.Namespace,
                     stack: ExitStack) -> tuple[Any, int, str]:
    from controller_model import build, loop_thread

    loop = stack.enter_context(loop_thread())
    data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    built = build(engine, audit, loop, data_dir, revisions=args.revisions, proxies=args.proxies)
    return built.data, built.done_revision, (
        f"controller read model (PagesView; {built.stored_rollouts} stored rollouts, "
        f"live rollout of revision {args.revisions})")


def _run_backend(engine: Engine, args: argparse.Namespace,
                 stack: ExitStack) -> dict[str, dict[str, float]]:
    audit, tokens = AuditLog(engine), ApiTokens(engine)
    now = datetime.now(UTC)
    fill_s = fill_audit(audit, args.records)
    started = time.perf_counter()
    if args.read_model == "demo":
        data, done_revision, model = _fill_demo(engine, args)
    else:
        data, done_revision, model = _fill_controller(engine, audit, args, stack)
    model_s = time.perf_counter() - started
    print(f"  audit filled in {fill_s:.0f} s, the {model} in {model_s:.0f} s; "
          "verifying the chain once ...", file=sys.stderr)
    chain = ChainStatus(audit, max_age=1e9, full_every=1e9)
    started = time.perf_counter()
    chain.refresh(full=True, wait=True)
    verify_s = time.perf_counter() - started
    print(f"  verified in {verify_s:.0f} s: {chain.verdict().result}", file=sys.stderr)
    if args.gc_freeze:
        # What a controller calling gc.freeze() once after start-up would have: the objects
        # alive now (the fleet, the rollout, the modules) are left out of full collections.
        gc.collect()
        gc.freeze()
        stack.callback(gc.unfreeze)  # the next backend starts from a normal heap

    from fastapi import FastAPI

    app = FastAPI()

    @app.middleware("http")
    async def timing(request: Request, call_next: Any) -> Any:
        t = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t) * 1000:.3f}"
        return response

    app.include_router(make_pages_router(data, audit, tokens, PagesSettings(), chain=chain))
    viewer = tokens.create("viewer", "bench", now=now)
    results: dict[str, dict[str, float]] = {}
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        form = client.get("/signin").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
        signed = client.post("/signin", data={"csrf_token": csrf, "token": viewer.token})
        assert signed.status_code in (200, 303), signed.status_code
        load_before = os.getloadavg()[0]
        # Round-robin over the pages (not 50 loads of one page, then the next), so a burst of
        # load from something else on the machine spreads over all pages instead of one.
        targets = pages(args.records, args.revisions, args.proxies, done_revision)
        times: dict[str, list[float]] = {name: [] for name in targets}
        for round_ in range(args.loads + 2):
            for name, path in targets.items():
                answer = client.get(path)
                if answer.status_code != 200:
                    raise SystemExit(f"{name}: {path} answered {answer.status_code}")
                if round_ >= 2:  # the first two rounds warm caches
                    times[name].append(float(answer.headers["server-timing"].split("dur=")[1]))
        for name, values in times.items():
            values.sort()
            results[name] = {
                "p50_ms": statistics.median(values),
                "p99_ms": values[min(len(values) - 1, round(0.99 * (len(values) - 1)))],
            }
    results["_fill"] = {
        "audit_fill_s": fill_s,
        "model_fill_s": model_s,
        "verify_s": verify_s,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "done_revision": done_revision,
    }
    return results


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--proxies", type=int, default=10_000)
    parser.add_argument("--revisions", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=50)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after the fill, before the loads (see docs/pages.md)")
    parser.add_argument("--read-model", choices=("controller", "demo"), default="controller",
                        help="what the pages read: the controller's PagesView "
                        "(what `meshcd serve` serves; default) or the demo SqlPagesData")
    args = parser.parse_args()
    out: dict[str, dict[str, float]] = {}
    full: dict[str, Any] = {}
    print(f"machine: {machine()}")
    print(f"read model: {args.read_model}" + (", gc.freeze() before the loads" if args.gc_freeze
                                               else ""))
    for backend in args.backends.split(","):
        print(
            f"{backend}: {args.records} audit records, {args.proxies} proxies, {args.revisions} revisions",
            file=sys.stderr,
        )
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                res = run_backend(sqlite_url(tmp), args)
        elif backend == "postgres":
            with postgres_database() as url:
                res = run_backend(url, args)
        else:
            raise SystemExit(f"unknown backend {backend}")
        full[backend] = res
        out[backend] = {
            page: round(v["p99_ms"], 2) for page, v in res.items() if not page.startswith("_")
        }
    done = int(next(iter(full.values()))["_fill"]["done_revision"]) if full else 1
    print(f"\n{args.read_model} read model, server time per page\n{'page':<24}"
          + "".join(f"{b + ' p50':>14}{b + ' p99':>14}" for b in full))
    for page in pages(args.records, args.revisions, args.proxies, done):
        print(
            f"{page:<24}"
            + "".join(
                f"{full[b][page]['p50_ms']:>12.1f}ms{full[b][page]['p99_ms']:>12.1f}ms"
                for b in full
            )
        )
    for b in full:
        fill = full[b]["_fill"]
        print(
            f"{b}: audit fill {fill['audit_fill_s']:.0f} s, {args.read_model} read model fill "
            f"{fill['model_fill_s']:.0f} s, full chain verify {fill['verify_s']:.0f} s, "
            f"load average (1 min) {fill['load_before']:.1f} before / {fill['load_after']:.1f} after the loads"
        )
    worst = max(v for b in out.values() for v in b.values())
    print(f"worst p99: {worst:.1f} ms ({'meets' if worst < 200 else 'MISSES'} the 200 ms target)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
