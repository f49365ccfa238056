"""The pages over HTTP (real uvicorn, httpx): refusals, folding, paging, export, cookies, TLS."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pages_fake import SqlPagesData
from pages_seed import make_app

from reconciler.audit import AuditLog, verify_jsonl
from reconciler.auth import ApiTokens
from reconciler.pages.readmodel import RevisionRow
from reconciler.store import open_engine, sqlite_url

Site = Any  # the `site` fixture of conftest.py


@contextmanager
def signed_in(base: str, token: str, **kwargs: Any) -> Iterator[httpx.Client]:
    client = httpx.Client(base_url=base, timeout=20, follow_redirects=True, **kwargs)
    form = client.get("/signin")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    answer = client.post("/signin", data={"csrf_token": csrf, "token": token, "next": "/"})
    assert answer.status_code == 200 and "Signed in as" in answer.text
    try:
        yield client
    finally:
        client.close()


def page_csrf(client: httpx.Client) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)  # type: ignore[union-attr]


def test_pages_signed_out_requests_go_to_sign_in(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        answer = client.get("/audit?kind=x")
        assert (
            answer.status_code == 303
            and answer.headers["location"] == "/signin?next=/audit%3Fkind%3Dx"
        )
        live = client.get("/live/overview", headers={"HX-Request": "true"})
        assert live.status_code == 401 and live.headers["hx-redirect"] == "/signin"
        # Sign-in without the login CSRF cookie is refused, even with a good token.
        refused = client.post("/signin", data={"csrf_token": "x", "token": site.admin.token})
        assert refused.status_code == 403 and "meshcd_session" not in refused.cookies


def test_pages_sign_in_only_redirects_locally(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        client.get("/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/signin").text).group(1)  # type: ignore[union-attr]
        answer = client.post(
            "/signin",
            data={"csrf_token": csrf, "token": site.viewer.token, "next": "//evil.example/x"},
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie


def test_pages_no_secret_on_any_page(site: Site) -> None:
    secrets = [site.admin.token, site.operator.token, site.viewer.token]
    with signed_in(site.url, site.admin.token) as client:
        bodies = [
            client.get(p).text
            for p in (
                "/",
                "/revisions",
                "/revisions/30",
                "/fleet",
                "/audit",
                "/tokens",
                "/audit/export.jsonl",
                "/live/overview",
            )
        ]
        for body in bodies:
            for secret in secrets:
                assert secret not in body and secret[4:20] not in body
        headers = client.get("/").headers
        assert (
            "script-src 'self'" in headers["content-security-policy"]
            and headers["x-frame-options"] == "DENY"
        )


def test_pages_big_diff_folds_and_big_blast_radius_is_summarised(site: Site) -> None:
    now = dt.datetime.now(dt.UTC)
    diff = "".join(f"+ line {i} {'x' * 60}\n" for i in range(5000))
    blast = [[f"svc-{i:05d}", 1] for i in range(10_000)]
    site.data.add_revision(
        RevisionRow(31, "f" * 40, "ana", "huge", "manual", "unsigned", "planned", now),
        resource_diff=diff,
        blast=blast,
    )
    with signed_in(site.url, site.viewer.token) as client:
        body = client.get("/revisions/31").text
        assert 'id="diff-folded"' in body and "/revisions/31/diff.txt" in body
        assert "line 4999" not in body and len(body) < 200_000
        assert "10000 proxies in 10000 services" in body and "9975 more services" in body
        raw = client.get("/revisions/31/diff.txt")
        assert raw.text == diff and raw.headers["content-type"].startswith("text/plain")
        assert client.get("/revisions/999").status_code == 404


def test_pages_audit_filters_paging_and_export(site: Site) -> None:
    base = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
    for i in range(130):
        site.audit.append(
            "tester",
            "probe.tick",
            f"revision {i % 3}",
            {"i": i},
            now=base + dt.timedelta(seconds=i),
        )
    with signed_in(site.url, site.viewer.token) as client:
        first = client.get("/audit", params={"kind": "probe.tick", "subject": "revision 1"}).text
        seqs = [int(s) for s in re.findall(r'id="seq-(\d+)"', first)]
        assert len(seqs) == 43 and seqs == sorted(seqs, reverse=True)
        page = client.get("/audit", params={"kind": "probe.tick"}).text
        shown = [int(s) for s in re.findall(r'id="seq-(\d+)"', page)]
        older = re.search(r'rel="next" href="([^"]+)"', page).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
        assert f"before={shown[-1]}" in older and "kind=probe.tick" in older
        rest = [int(s) for s in re.findall(r'id="seq-(\d+)"', client.get("/audit" + older).text)]
        assert rest and max(rest) < min(shown) and len(shown) == 50
        window = client.get(
            "/audit",
            params={
                "kind": "probe.tick",
                "since": "2026-11-25T09:00:10",
                "until": "2026-11-25T09:00:20",
            },
        ).text
        assert len(re.findall(r'id="seq-(\d+)"', window)) == 10
        bad = client.get("/audit", params={"since": "soon"})
        assert bad.status_code == 200 and "since: not a time" in bad.text
        export = client.get("/audit/export.jsonl")
        assert export.headers["content-type"].startswith("application/jsonl")
        lines = export.text.splitlines()
        assert verify_jsonl(lines).ok and len(lines) > 130
        assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert site.audit.list(kind="audit.exported")[0].actor.startswith("token:vic#")


def test_pages_rollback_needs_confirmation_and_a_deployed_target(site: Site) -> None:
    with signed_in(site.url, site.operator.token) as client:
        csrf = page_csrf(client)
        confirm = client.get("/actions/rollback").text
        assert '<select id="target" name="target" required>' in confirm
        assert (
            client.post("/actions/rollback", data={"csrf_token": csrf, "target": "29"}).status_code
            == 400
        )
        target = site.data.rollback_targets(limit=1)[0].id
        done = client.post(
            "/actions/rollback", data={"csrf_token": csrf, "confirm": "yes", "target": str(target)}
        )
        assert done.status_code == 200 and f"rolling back to revision {target}" in done.text
        assert site.data.overview().deployed.id == target  # type: ignore[union-attr]
        refused = client.post("/actions/pause", data={"csrf_token": csrf, "confirm": "yes"})
        assert refused.status_code == 409 and "no rollout in progress" in refused.text
    kinds = [
        (r.kind, r.data["ok"])
        for r in site.audit.list(kind="action.rollback") + site.audit.list(kind="action.pause")
    ]
    assert sorted(kinds) == [("action.pause", False), ("action.rollback", True)]


def test_pages_tokens_admin_only_and_revocation_ends_sessions(site: Site) -> None:
    with signed_in(site.url, site.operator.token) as operator:
        assert operator.get("/tokens").status_code == 403
        assert (
            operator.post(
                "/tokens", data={"csrf_token": page_csrf(operator), "role": "admin", "name": "me"}
            ).status_code
            == 403
        )
        with signed_in(site.url, site.admin.token) as admin:
            csrf = page_csrf(admin)
            assert (
                admin.post(f"/tokens/{site.operator.id}/revoke", data={}).status_code == 403
            )  # no CSRF
            assert (
                admin.post(
                    f"/tokens/{site.operator.id}/revoke", data={"csrf_token": csrf}
                ).status_code
                == 200
            )
            assert (
                admin.post(
                    f"/tokens/{site.operator.id}/revoke", data={"csrf_token": csrf}
                ).status_code
                == 404
            )
        assert operator.get("/", follow_redirects=False).status_code == 303
    assert site.audit.list(kind="apitoken.revoked")[0].subject == site.operator.id


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_pages_session_cookie_is_secure_over_tls(tmp_path: Path) -> None:
    engine = open_engine(sqlite_url(tmp_path / "data"))
    audit, tokens = AuditLog(engine), ApiTokens(engine)
    app = make_app(SqlPagesData(engine), audit, tokens)
    viewer = tokens.create("viewer", "v", now=dt.datetime.now(dt.UTC))
    cert, key = _self_signed(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context) as client:
            client.get("/signin")
            csrf = re.search(
                r'name="csrf_token" value="([^"]+)"', client.get("/signin").text
            ).group(1)  # type: ignore[union-attr]
            answer = client.post(
                "/signin", data={"csrf_token": csrf, "token": viewer.token}, follow_redirects=False
            )
            assert answer.status_code == 303
            assert (
                "Secure" in answer.headers["set-cookie"]
                and "HttpOnly" in answer.headers["set-cookie"]
            )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


def test_pages_live_actions_answer_204_while_unchanged(site: Site) -> None:
    with signed_in(site.url, site.operator.token) as client:
        now = client.get("/live/actions?have=promote,pause,abort,rollback")
        assert now.status_code == 204 and now.content == b""
        changed = client.get("/live/actions?have=promote,resume,abort,rollback")
        assert changed.status_code == 200 and 'class="button action-pause"' in changed.text
        assert 'hx-get="/live/actions?have=promote,pause,abort,rollback"' in changed.text
    with signed_in(site.url, site.viewer.token) as client:
        assert client.get("/live/actions").status_code == 403
