"""The web pages mounted in a real `meshcd serve`: sign in over HTTP with the admin token
(sign-in form + login CSRF cookie), the Overview shows the deployed revision and the fleet
counts, the Audit page lists records; a viewer token from `meshcd token create` signs in and
is offered no action; the JSON API's admin-token check still holds."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from controller_helpers import NS, ConfigRepo, Processes, Serve, free_static_port, mesh_files, until

from reconciler.auth import CSRF_FIELD

TOKEN_RX = re.compile(r"mat_[A-Za-z0-9_\-]+")


def sign_in(base: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10)
    form = client.get("/signin")
    assert form.status_code == 200
    m = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', form.text)
    assert m, form.text
    done = client.post("/signin", data={CSRF_FIELD: m.group(1), "next": "/", "token": token})
    assert done.status_code == 303, (done.status_code, done.text)
    assert done.headers["location"] == "/"
    return client


def test_pages_in_serve(tmp_path: Path, procs: Processes) -> None:
    ports = {"web": [free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(mesh_files(ports), "first config")
    serve = Serve(procs, tmp_path / "ctl", repo.url)
    serve.start()
    rev = serve.wait_status(c1, {"deployed"})
    pid = f"web.{NS}-0"
    serve.join_proxy(pid, "web", tmp_path / "proxy-web")
    until(lambda: serve.ledger().get(pid, {}).get("state") == "SYNCED", 60, "proxy synced")

    # without a session the pages send the browser to the sign-in form
    anon = httpx.get(serve.api + "/", timeout=10)
    assert anon.status_code == 303 and anon.headers["location"].startswith("/signin")

    admin = sign_in(serve.api, serve.token)
    page = admin.get("/")
    assert page.status_code == 200
    deployed = re.search(r'<p id="deployed-revision">(.*?)</p>', page.text, re.S)
    assert deployed and f"#{rev['id']}" in deployed.group(1) and c1[:12] in deployed.group(1)
    assert re.search(r'id="count-synced">1<', page.text)
    for state in ("stale", "nacked", "disconnected"):
        assert re.search(rf'id="count-{state}">0<', page.text)
    assert "No rollout in progress." in page.text
    assert 'href="/actions/rollback"' in page.text  # offered to the admin (operator+)

    audit = admin.get("/audit")
    assert audit.status_code == 200
    seqs = re.findall(r'<tr id="seq-(\d+)">', audit.text)
    assert len(seqs) >= 3
    for kind in ("controller.started", "deploy.finished", "session.signed_in"):
        assert f"<code>{kind}</code>" in audit.text

    # actions are refused honestly: nothing to act on without a canary engine
    confirm = admin.get("/actions/pause")
    csrf = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', confirm.text)
    assert csrf, confirm.text
    acted = admin.post("/actions/pause", data={CSRF_FIELD: csrf.group(1), "confirm": "yes"})
    assert acted.status_code == 409 and "no rollout in progress" in acted.text
    record = serve.audit("action.pause")[0]
    assert record["data"]["ok"] is False

    # a viewer from the CLI signs in and is offered no action
    made = serve.cli("token", "create", "--role", "viewer", "--name", "vera")
    assert made.returncode == 0, made.stderr
    found = TOKEN_RX.search(made.stdout)
    assert found, made.stdout
    viewer = sign_in(serve.api, found.group(0))
    page = viewer.get("/")
    assert page.status_code == 200 and c1[:12] in page.text
    assert "/actions/" not in page.text
    assert viewer.get("/audit").status_code == 200

    # the JSON API keeps its admin-token check
    assert serve.post("/api/refresh", {}, token="mat_not-a-token")[0] == 401
    assert serve.post("/api/refresh", {})[0] == 202
    admin.close()
    viewer.close()
