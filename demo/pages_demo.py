"""Try the pages without a controller: `python demo/pages_demo.py [--port 8090]`.

Seeds a store with revisions, a fleet and a canary rollout that a background thread drives
(one point of canary/baseline signals per second, a stage promoted every `--stage-seconds`),
prints the URL with a viewer, an operator and an admin token, and serves the pages until
Ctrl-C. Everything lives in `--data-dir` (default: a temporary directory). The read model is
the page tests' fake (`tests/support/pages_fake.py`), not the controller's.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))  # the pages fake and its seed

from pages_fake import SqlPagesData  # noqa: E402
from pages_seed import canary_stages, make_app, seed_fleet, seed_revisions  # noqa: E402

from reconciler.audit import AuditLog  # noqa: E402
from reconciler.auth import ApiTokens  # noqa: E402
from reconciler.pages.readmodel import Action, RevisionRow, SeriesPoint, Signals  # noqa: E402
from reconciler.store import open_engine, sqlite_url  # noqa: E402


def drive(
    data: SqlPagesData, audit: AuditLog, revision: int, stage_seconds: int, stop: threading.Event
) -> None:
    """Feed the rollout one point per second; promote a stage every `stage_seconds`."""
    rng = random.Random(7)
    t = 0
    while not stop.wait(1.0):
        overview = data.overview()
        rollout = overview.rollout
        if rollout is None or rollout.revision_id != revision:
            return  # aborted or finished from the page
        if rollout.state == "paused":
            continue
        p99 = 80 + rng.random() * 20
        base = Signals(0.002 + rng.random() * 0.002, p99, rng.random())
        canary = Signals(base.error_rate * 1.1, p99 * 1.05, base.denials)
        data.add_points(revision, [SeriesPoint(t, canary, base)])
        data.set_stage_signals(revision, rollout.current_stage, canary, base)
        t += 1
        if t % stage_seconds == 0:
            result = data.act(Action.PROMOTE, actor="canary-judge", target_revision=None)
            audit.append(
                "canary-judge",
                "rollout.judged",
                f"revision {revision}",
                {"message": result.message},
                now=datetime.now(UTC),
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--stage-seconds", type=int, default=30)
    args = parser.parse_args()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="meshcd-pages-demo-")
    engine = open_engine(sqlite_url(data_dir))
    audit, tokens, data = AuditLog(engine), ApiTokens(engine), SqlPagesData(engine)
    now = datetime.now(UTC)
    seed_revisions(data, 40, now=now)
    seed_fleet(data, 500, now=now)
    data.set_last_fetch(now, True, "fetched main")
    data.add_revision(
        RevisionRow(
            41, "d" * 40, "ana", "routes: canary this", "webhook", "verified", "planned", now
        )
    )
    data.start_rollout(41, canary_stages(500), now=now)
    made = {
        role: tokens.create(role, f"demo-{role}", now=now)
        for role in ("viewer", "operator", "admin")
    }
    stop = threading.Event()
    threading.Thread(
        target=drive, args=(data, audit, 41, args.stage_seconds, stop), daemon=True
    ).start()
    print(f"meshcd pages: http://127.0.0.1:{args.port}/  (data in {data_dir})")
    for role, token in made.items():
        print(f"  {role:<8} token: {token.token}")
    try:
        uvicorn.run(
            make_app(data, audit, tokens), host="127.0.0.1", port=args.port, log_level="warning"
        )
    finally:
        stop.set()
        time.sleep(0.1)


if __name__ == "__main__":
    main()
