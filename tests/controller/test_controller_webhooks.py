"""Issue #7's receiver mounted in a running `meshcd serve`: a signed delivery from each forge
triggers a fetch and a deploy (the poll is an hour away, so only the webhook can); a burst
is coalesced into one or two fetches with every delivery audited; bad signatures fetch
nothing. Also the admin token on mutating API calls."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from controller_helpers import ConfigRepo, Processes, Serve, free_static_port, mesh_files, until

from webhooks.sample import build_sample

FORGES = ("github", "gitlab", "gitea", "forgejo", "bitbucket", "generic")


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def fetches(serve: Serve) -> float:
    with urllib.request.urlopen(serve.api + "/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^meshcd_fetches_total\{result="ok"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_each_forge_triggers_a_deploy(tmp_path: Path, procs: Processes) -> None:
    ports = {"web": [free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c0 = repo.commit(mesh_files(ports), "first")
    secrets = {}
    for forge in FORGES:
        f = tmp_path / f"{forge}.secret"
        f.write_text(f"s3cret-{forge}-{uuid.uuid4().hex}\n")
        secrets[forge] = f
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=3600, extra={
        "webhooks": {"secrets": {k: f"file:{v}" for k, v in secrets.items()}}})
    serve.start()
    serve.wait_status(c0, {"deployed"})
    serve.join_proxy("web.shop-0", "web", tmp_path / "p-web")
    until(lambda: serve.ledger().get("web.shop-0", {}).get("state") == "SYNCED", 60, "join")

    for n, forge in enumerate(FORGES):
        commit = repo.commit(mesh_files(ports, timeout=f"{n + 10}s"), f"via {forge}")
        secret = secrets[forge].read_bytes().rstrip(b"\n")
        sample = build_sample(forge, secret, repo_url=repo.url, branch="main", after=commit)
        status, answer = post(f"{serve.api}/webhooks/{forge}", sample.headers, sample.body)
        assert (status, answer["result"]) == (202, "accepted"), (forge, answer)
        rev = serve.wait_status(commit, {"deployed", "failed", "invalid"}, 30)
        assert rev["status"] == "deployed" and rev["trigger"] == "webhook", (forge, rev)
        entry = serve.ledger()["web.shop-0"]
        assert entry["desiredRevision"] == commit and entry["state"] == "SYNCED"
    until(lambda: {(f, "accepted") for f in FORGES} <= {
        (r["data"]["forge"], r["data"]["result"]) for r in serve.audit("webhook.delivery")},
        10, "every forge's delivery audited")

    # a wrong signature: 401, audited, no fetch
    before = fetches(serve)
    commit = repo.commit(mesh_files(ports, timeout="30s"), "unsigned")
    sample = build_sample("github", b"not-the-secret", repo_url=repo.url, after=commit)
    status, answer = post(f"{serve.api}/webhooks/github", sample.headers, sample.body)
    assert status == 401 and answer["reason"] == "bad_signature"
    until(lambda: any(r["data"]["reason"] == "bad_signature"
                      for r in serve.audit("webhook.delivery")), 10, "refusal audited")
    assert fetches(serve) == before and serve.revision_of(commit) is None

    # a burst of 100 deliveries: one or two fetches, every delivery in the audit
    secret = secrets["generic"].read_bytes().rstrip(b"\n")
    samples = [build_sample("generic", secret, repo_url=repo.url, after=commit)
               for _ in range(100)]
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda s: post(f"{serve.api}/webhooks/generic", s.headers,
                                               s.body), samples))
    took = time.monotonic() - started
    assert all(status == 202 for status, _ in answers)
    serve.wait_status(commit, {"deployed"})
    until(lambda: sum(1 for r in serve.audit("webhook.delivery")
                      if r["data"]["forge"] == "generic") >= 101, 10, "burst audited")
    # a fetch at once, then one per second of burst (2 for a burst within a second)
    assert 1 <= fetches(serve) - before <= 2 + int(took), took

    # mutating calls need an operator token; the audit names it by id, never the secret
    assert serve.post("/api/refresh", {}, token=False)[0] == 401  # type: ignore[arg-type]
    assert serve.post("/api/refresh", {}, token="mca_wrong")[0] == 401
    assert serve.post("/api/tokens/join", {"service": "Bad_Name"})[0] in (400, 422)
    status, doc = serve.post("/api/refresh", {})
    assert status == 202 and doc["actor"].startswith("token:admin#")
    manual = serve.audit("manual.refresh")
    assert manual and manual[0]["actor"] == doc["actor"]
    req = urllib.request.Request(serve.api + "/api/audit/export",
                                 headers={"Authorization": f"Bearer {serve.token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        export = r.read().decode()
    assert serve.token not in export and "token.issued" in export

    # bad input to the read API: clear 4xx answers
    for path, code in [("/api/revisions/999999", 404), ("/api/audit/999999", 404),
                       ("/api/audit?since=yesterday", 400), ("/api/audit?limit=5000", 422),
                       ("/api/revisions?limit=0", 422), ("/api/revisions/abc", 422)]:
        try:
            urllib.request.urlopen(urllib.request.Request(
                serve.api + path, headers={"Authorization": f"Bearer {serve.token}"}), timeout=10)
            raise AssertionError(f"{path} answered 2xx")
        except urllib.error.HTTPError as e:
            assert e.code == code, (path, e.code)
    page = serve.get("/api/audit?limit=5")
    older = serve.get(f"/api/audit?limit=5&before={page['next']}")
    assert older["records"][0]["seq"] == page["records"][-1]["seq"] - 1
