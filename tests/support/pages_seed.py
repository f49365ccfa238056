"""Synthetic content for `SqlPagesData`: revisions, a fleet, a rollout with its series.

Used by the page tests, the benchmark (`bench/page.py`) and for trying the pages before the
controller implements `PagesData`. Deterministic for a given `seed`.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from fastapi import FastAPI
from pages_fake import FLEET_STATES, SqlPagesData

from reconciler.audit import AuditLog
from reconciler.auth.deps import install
from reconciler.auth.tokens import ApiTokens
from reconciler.pages.readmodel import ProxyRow, RevisionRow, SeriesPoint, Signals, StageView
from reconciler.pages.router import PagesSettings, make_pages_router

_OUTCOMES = ("deployed", "deployed", "deployed", "rejected", "invalid", "superseded", "failed")
_AUTHORS = ("ana", "bo", "chen", "dara", "eli")


def make_app(
    data: SqlPagesData, audit: AuditLog, tokens: ApiTokens, settings: PagesSettings | None = None
) -> FastAPI:
    """A FastAPI app serving only the pages (what `meshcd serve` adds its API to)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    install(app, tokens)
    router = make_pages_router(data, audit, tokens, settings)
    app.state.pages_chain = router.state_chain  # type: ignore[attr-defined]
    app.include_router(router)
    return app


def commit_of(i: int) -> str:
    return f"{(i * 2654435761) % 16**10:010x}" + "c0ffee" + f"{i:024x}"


def seed_revisions(data: SqlPagesData, count: int, *, now: datetime, seed: int = 1) -> None:
    """`count` revisions (ids 1..count, oldest first), the newest deployed one deployed."""
    rng = random.Random(seed)
    rows = []
    for i in range(1, count + 1):
        outcome = _OUTCOMES[rng.randrange(len(_OUTCOMES))] if i < count else "deployed"
        row = RevisionRow(
            id=i,
            commit=commit_of(i),
            author=_AUTHORS[i % len(_AUTHORS)],
            message=f"routes: change {i}\n\nlonger description of change {i}",
            trigger=("webhook", "poll", "manual")[i % 3],
            signature="verified (ssh key SHA256:ab12…)" if i % 4 else "unsigned",
            outcome=outcome,
            detected_at=now - timedelta(minutes=(count - i) * 7),
        )
        findings = (
            [
                {
                    "severity": "error",
                    "code": "MCD120",
                    "message": "route points at unknown service",
                    "file": "routes/web.yaml",
                    "line": 12,
                }
            ]
            if outcome == "invalid"
            else [
                {
                    "severity": "warning",
                    "code": "MCD301",
                    "message": "retry budget above 50%",
                    "file": "policies/retries.yaml",
                    "line": 7,
                }
            ]
        )
        diff = "".join(
            f"--- a/web/route-{k}\n+++ b/web/route-{k}\n-  timeout: {k}s\n+  timeout: {k + 1}s\n"
            for k in range(3)
        )
        blast = [[f"svc-{k}", 10 + k] for k in range(5)]
        access = [
            {
                "source": "spiffe://mesh.local/ns/shop/sa/web",
                "destination": "payments",
                "change": "now allowed",
                "detail": "POST /charge",
            }
        ]
        rows.append(
            (row, {"findings": findings, "resource_diff": diff, "blast": blast, "access": access})
        )
        if len(rows) >= 1000:
            data.add_revisions(rows)
            rows = []
    if rows:
        data.add_revisions(rows)
    data.set_deployed(count)


def seed_fleet(
    data: SqlPagesData, count: int, *, now: datetime, services: int = 100, seed: int = 2
) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        state = FLEET_STATES[0] if rng.random() < 0.9 else FLEET_STATES[rng.randrange(1, 4)]
        rows.append(
            ProxyRow(
                proxy_id=f"proxy-{i:06d}",
                service=f"svc-{i % services:03d}",
                version=f"{rng.getrandbits(64):016x}",
                state=state,
                last_seen=now - timedelta(seconds=rng.randrange(0, 3600)),
                last_error="listener 'in' rejected: bad route regex" if state == "NACKED" else None,
            )
        )
    data.add_proxies_bulk(rows)


def canary_stages(proxies: int) -> list[StageView]:
    thresholds = {"error_rate": 0.01, "p99_ms": 250.0, "denials": 5.0}
    sizes = [
        ("1 proxy", 1),
        ("10%", max(proxies // 10, 1)),
        ("50%", max(proxies // 2, 1)),
        ("100%", proxies),
    ]
    return [
        StageView(i, name, n, "pending", thresholds=thresholds) for i, (name, n) in enumerate(sizes)
    ]


def series(seconds: int, *, bad_after: int | None = None, seed: int = 3) -> list[SeriesPoint]:
    """Per-second canary/baseline signals; the canary degrades from `bad_after` on."""
    rng = random.Random(seed)
    points = []
    for t in range(seconds):
        bad = bad_after is not None and t >= bad_after
        p99 = 80 + rng.random() * 20
        base = Signals(0.002 + rng.random() * 0.002, p99, rng.random())
        canary = Signals(
            base.error_rate * (12 if bad else 1.1),
            p99 * (3 if bad else 1.05),
            base.denials + (8 if bad else 0),
        )
        points.append(SeriesPoint(t, canary, base))
    return points
