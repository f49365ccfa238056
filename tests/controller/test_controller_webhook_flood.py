"""Issue #17 finding 8: a flood of refused webhook deliveries must not write one permanent
audit record each. A running `meshcd serve` gets 1,000 refused deliveries (bad signatures,
an unknown forge) and one good one: the good one is recorded, the refused ones are counted in
a bounded number of `webhook.rejected` summaries (plus a few full samples) whose counts add
up to 1,000."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from controller_helpers import ConfigRepo, Processes, Serve, mesh_files, until
from test_controller_webhooks import post

from webhooks.sample import build_sample


def test_rejected_flood_is_counted_not_recorded_one_by_one(tmp_path: Path,
                                                           procs: Processes) -> None:
    repo = ConfigRepo(tmp_path / "mesh.git")
    commit = repo.commit(mesh_files({"api": [1]}), "first")
    secrets = {}
    for forge in ("github", "generic"):
        f = tmp_path / f"{forge}.secret"
        f.write_text(f"s3cret-{uuid.uuid4().hex}\n")
        secrets[forge] = f
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=3600, extra={
        "trust_domain": "ctl.test",
        "webhooks": {"secrets": {k: f"file:{v}" for k, v in secrets.items()},
                     "rejected_summary_s": 1, "rejected_samples": 3}})
    serve.start()

    bad = [("github", build_sample("github", b"wrong", repo_url=repo.url, after=commit))
           for _ in range(600)]
    bad += [("generic", build_sample("generic", b"wrong", repo_url=repo.url, after=commit))
            for _ in range(300)]
    bad += [("nope", build_sample("generic", b"wrong", repo_url=repo.url, after=commit))
            for _ in range(100)]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda fs: post(f"{serve.api}/webhooks/{fs[0]}", fs[1].headers, fs[1].body), bad))
    took = time.monotonic() - started
    assert sorted({status for status, _ in answers}) == [401, 404], answers[:3]
    good = build_sample("generic", secrets["generic"].read_bytes().rstrip(b"\n"),
                        repo_url=repo.url, after=commit)
    assert post(f"{serve.api}/webhooks/generic", good.headers, good.body)[0] == 202

    def summaries() -> list[dict[str, Any]]:
        return serve.audit("webhook.rejected")

    until(lambda: sum(r["data"]["total"] for r in summaries()) >= 1000, 30,
          "1,000 refusals in the summaries")
    time.sleep(1.5)  # one more interval: nothing else may come
    recs = summaries()
    counts = [c for r in recs for c in r["data"]["counts"]]
    assert sum(c["count"] for c in counts) == 1000
    by_reason: dict[tuple[str, str], int] = {}
    for c in counts:
        by_reason[c["forge"], c["reason"]] = by_reason.get((c["forge"], c["reason"]), 0) + c["count"]
    assert by_reason[("github", "bad_signature")] == 600
    assert by_reason[("generic", "bad_signature")] == 300
    assert sum(n for (f, _), n in by_reason.items() if f == "nope") == 100
    assert all(c["source"] == "127.0.0.1" for c in counts)

    deliveries = serve.audit("webhook.delivery")
    rejected = [r for r in deliveries if r["data"]["result"] == "rejected"]
    assert all(r["data"]["sampled"] for r in rejected)
    # bounded: one summary per interval (1 s here) and 3 samples per interval at most
    assert 1 <= len(recs) <= took + 3, (len(recs), took)
    assert len(rejected) <= 3 * len(recs)
    assert len(recs) + len(rejected) < 60  # was 1,000 records
    assert [r["data"]["result"] for r in deliveries if r["data"]["result"] != "rejected"] \
        == ["accepted"]
    assert serve.get("/api/status")["webhooksRejected"]["total"] == 1000
    assert serve.cli("audit", "verify").returncode == 0
