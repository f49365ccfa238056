"""Every forge through a real uvicorn server: the valid push, and each bad input answered
with its status, a JSON reason, an audit record, and no on_update call."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from webhook_cases import (
    CASES,
    NEW_SHA,
    PAYLOADS,
    ZERO,
    Case,
    dig,
    encode,
    new_id,
    raw_request,
    response_json,
)
from webhook_server import Server

from webhooks.settings import MIB

ALL = list(CASES)


def post(
    client: httpx.Client, server: Server, case: Case, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return client.post(server.url(case.name, case.forge), content=body, headers=headers)


def expect_no_update(server: Server, case: Case, delivery: str, result: str, reason: str) -> None:
    rec = server.recorders[case.name]
    assert rec.updates_for(delivery) == []
    audits = rec.audits_for(delivery)
    assert [(a.result, a.reason) for a in audits] == [(result, reason)]


def send(
    client: httpx.Client, server: Server, case: Case, payload: dict[str, Any], **overrides: str
) -> tuple[httpx.Response, str]:
    delivery = new_id()
    body = encode(payload)
    headers = case.headers(body, delivery)
    headers.update(overrides)
    return post(client, server, case, body, headers), delivery


@pytest.mark.parametrize("name", ALL)
def test_valid_push_is_accepted_and_handed_on(
    client: httpx.Client, server: Server, name: str
) -> None:
    case = CASES[name]
    body = encode(case.payload())
    delivery = new_id()
    r = post(client, server, case, body, case.headers(body, delivery))
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["result"] == "accepted"
    assert answer["ref"] == "refs/heads/main"
    updates = server.recorders[name].updates_for(delivery)
    assert len(updates) == 1
    update = updates[0]
    assert update.forge == case.forge and update.ref == "refs/heads/main"
    assert update.after == answer["after"] and len(update.after) == 40
    assert update.pusher == "ada"
    audit = server.recorders[name].audits_for(delivery)
    assert [(a.result, a.status) for a in audit] == [("accepted", 202)]
    assert audit[0].remote_addr == "127.0.0.1"
    # The audit holds neither the secret nor the payload.
    text = repr(audit)
    # (the pusher as a word: a random delivery id may hold the letters "ada")
    assert case.secret.decode(errors="replace") not in text
    assert re.search(r"\bada\b", text) is None, text


@pytest.mark.parametrize("name", ALL)
def test_bad_signature_is_401(client: httpx.Client, server: Server, name: str) -> None:
    case = CASES[name]
    body = encode(case.payload())
    delivery = new_id()
    headers = case.headers(body, delivery, secret=b"not the secret")
    r = post(client, server, case, body, headers)
    assert r.status_code == 401 and r.json()["reason"] == "bad_signature"
    expect_no_update(server, case, delivery, "rejected", "bad_signature")


# GitLab sends a token, not a signature over the body: nothing to tamper with there.
@pytest.mark.parametrize("name", [n for n in ALL if CASES[n].forge != "gitlab"])
def test_body_changed_after_signing_is_401(client: httpx.Client, server: Server, name: str) -> None:
    case = CASES[name]
    payload = case.payload()
    body = encode(payload)
    delivery = new_id()
    headers = case.headers(body, delivery)
    case.mutate(payload, ref="refs/heads/main", after=NEW_SHA, repo=None)
    r = post(client, server, case, encode(payload), headers)
    assert r.status_code == 401 and r.json()["reason"] == "bad_signature"
    expect_no_update(server, case, delivery, "rejected", "bad_signature")


SIGNATURE_HEADERS = {
    "github": "x-hub-signature-256",
    "gitlab": "x-gitlab-token",
    "gitea": "x-gitea-signature",
    "forgejo": "x-forgejo-signature",
    "bitbucket": "x-hub-signature",
    "generic": "x-meshcd-signature",
}


@pytest.mark.parametrize("name", ALL)
def test_missing_signature_header_is_401(client: httpx.Client, server: Server, name: str) -> None:
    case = CASES[name]
    body = encode(case.payload())
    delivery = new_id()
    headers = {
        k: v
        for k, v in case.headers(body, delivery).items()
        if "signature" not in k.lower() and "token" not in k.lower()
    }
    r = post(client, server, case, body, headers)
    assert r.status_code == 401 and r.json()["reason"] == "missing_signature"
    expect_no_update(server, case, delivery, "rejected", "missing_signature")


@pytest.mark.parametrize("name", ["github", "bitbucket-cloud", "bitbucket-dc", "generic"])
def test_sha1_signature_is_never_accepted(client: httpx.Client, server: Server, name: str) -> None:
    import hashlib
    import hmac

    case = CASES[name]
    body = encode(case.payload())
    delivery = new_id()
    headers = case.headers(body, delivery)
    sha1 = "sha1=" + hmac.new(case.secret, body, hashlib.sha1).hexdigest()
    if case.forge == "github":  # the legacy header alone, correctly computed
        del headers["X-Hub-Signature-256"]
        headers["X-Hub-Signature"] = sha1
    else:
        (key,) = [k for k in headers if k.lower() == SIGNATURE_HEADERS[case.forge]]
        headers[key] = sha1
    r = post(client, server, case, body, headers)
    assert r.status_code == 401
    assert r.json()["reason"] == "unsupported_signature_algorithm"
    expect_no_update(server, case, delivery, "rejected", "unsupported_signature_algorithm")


@pytest.mark.parametrize("name", ALL)
def test_replayed_delivery_is_answered_but_not_acted_on(
    client: httpx.Client, server: Server, name: str
) -> None:
    case = CASES[name]
    body = encode(case.payload())
    delivery = new_id()
    headers = case.headers(body, delivery)
    first = post(client, server, case, body, headers)
    second = post(client, server, case, body, headers)
    assert first.status_code == 202
    assert second.status_code == 200 and second.json()["result"] == "duplicate"
    rec = server.recorders[name]
    assert len(rec.updates_for(delivery)) == 1
    assert [a.result for a in rec.audits_for(delivery)] == ["accepted", "duplicate"]


@pytest.mark.parametrize("name", ALL)
def test_oversized_body_declared_by_content_length_is_413_before_reading(
    server: Server, name: str
) -> None:
    case = CASES[name]
    delivery = new_id()
    body = encode(case.payload())
    headers = case.headers(body, delivery)
    head = (
        f"POST /{name}/webhooks/{case.forge} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {2 * MIB}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode("latin-1")
    # Only the first bytes are ever sent: the answer must not wait for the rest.
    status, data = raw_request(server.port, head, [body])
    assert status == 413 and response_json(data)["reason"] == "body_too_large"
    assert b"connection: close" in data.lower()
    expect_no_update(server, case, delivery, "rejected", "body_too_large")


@pytest.mark.parametrize("name", ALL)
def test_oversized_chunked_body_is_413(server: Server, name: str) -> None:
    case = CASES[name]
    delivery = new_id()
    headers = case.headers(b"{}", delivery)
    head = (
        f"POST /{name}/webhooks/{case.forge} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Transfer-Encoding: chunked\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode("latin-1")
    piece = b" " * (64 * 1024)
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    status, data = raw_request(server.port, head, [chunk] * 24)  # 1.5 MiB > 1 MiB cap
    assert status == 413 and response_json(data)["reason"] == "body_too_large"
    expect_no_update(server, case, delivery, "rejected", "body_too_large")


@pytest.mark.parametrize("name", ALL)
def test_slow_body_is_408(server: Server, name: str) -> None:
    case = CASES[name]
    delivery = new_id()
    body = encode(case.payload())
    headers = case.headers(body, delivery)
    head = (
        f"POST /{name}/webhooks/{case.forge} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode("latin-1")
    # Half the body, then silence: the server gives up after its body time limit.
    status, data = raw_request(server.port, head, [body[: len(body) // 2]])
    assert status == 408 and response_json(data)["reason"] == "body_timeout"
    expect_no_update(server, case, delivery, "rejected", "body_timeout")


BAD_JSON = [
    pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
    pytest.param(lambda b: b'{"ref": NaN}', id="nan"),
    pytest.param(lambda b: b'{"ref": 1e999}', id="infinity"),
    pytest.param(lambda b: b'{"ref": "a", "ref": "b"}', id="duplicate-key"),
    pytest.param(lambda b: b[:-1] + b"," + b[1:], id="every-key-twice"),
    pytest.param(lambda b: b"\xff\xfe" + b, id="not-utf8"),
    pytest.param(lambda b: b"", id="empty"),
    pytest.param(lambda b: b"[" * 100_000, id="deep-nesting"),
    pytest.param(lambda b: b"[]", id="array-top-level"),
    pytest.param(lambda b: b'"push"', id="string-top-level"),
    pytest.param(lambda b: b"null", id="null-top-level"),
]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("spoil", BAD_JSON)
def test_invalid_json_is_400(client: httpx.Client, server: Server, name: str, spoil: Any) -> None:
    case = CASES[name]
    body = spoil(encode(case.payload()))
    delivery = new_id()
    r = post(client, server, case, body, case.headers(body, delivery))  # correctly signed
    assert r.status_code == 400 and r.json()["reason"] == "invalid_json", r.text
    expect_no_update(server, case, delivery, "rejected", "invalid_json")


@pytest.mark.parametrize("name", ALL)
def test_missing_field_is_422(client: httpx.Client, server: Server, name: str) -> None:
    case = CASES[name]
    payload = case.payload()
    node, key = dig(payload, case.required_path)
    del node[key]
    r, delivery = send(client, server, case, payload)
    assert r.status_code == 422 and r.json()["reason"] == "invalid_payload", r.text
    assert key in r.json()["detail"]
    expect_no_update(server, case, delivery, "rejected", "invalid_payload")


@pytest.mark.parametrize("name", ALL)
def test_string_where_an_array_belongs_is_422(
    client: httpx.Client, server: Server, name: str
) -> None:
    case = CASES[name]
    payload = case.payload()
    node, key = dig(payload, case.array_path)
    node[key] = ["https://example.com/x.git"] if name == "generic" else "not an array"
    r, delivery = send(client, server, case, payload)
    assert r.status_code == 422 and r.json()["reason"] == "invalid_payload", r.text
    expect_no_update(server, case, delivery, "rejected", "invalid_payload")


BAD_SHAPES = [
    pytest.param({"after": "abc123"}, id="short-sha"),
    pytest.param({"after": "g" * 40}, id="non-hex-sha"),
    pytest.param({"after": "a" * 41}, id="41-hex"),
    pytest.param({"ref": "main"}, id="ref-not-full"),
    pytest.param({"ref": "refs/heads/a..b"}, id="ref-dotdot"),
    pytest.param({"ref": "refs/heads/x y"}, id="ref-space"),
]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("change", BAD_SHAPES)
def test_bad_ref_or_sha_shape_is_422(
    client: httpx.Client, server: Server, name: str, change: dict[str, str]
) -> None:
    case = CASES[name]
    payload = case.payload()
    case.mutate(payload, ref=change.get("ref"), after=change.get("after"), repo=None)
    r, delivery = send(client, server, case, payload)
    assert r.status_code == 422 and r.json()["reason"] == "invalid_payload", r.text
    expect_no_update(server, case, delivery, "rejected", "invalid_payload")


@pytest.mark.parametrize("name", [n for n in ALL if CASES[n].unknown_event])
def test_unknown_event_verified_is_200_ignored(
    client: httpx.Client, server: Server, name: str
) -> None:
    # Authenticated and well-formed, just not for us: 200, so that no forge counts it as a
    # failure (GitLab disables a hook after 4 failures in a row).
    case = CASES[name]
    assert case.unknown_event is not None
    r, delivery = send(client, server, case, case.payload(), **case.unknown_event)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "ignored" and r.json()["reason"] == "event_not_handled"
    assert r.json()["detail"] == next(iter(case.unknown_event.values()))
    expect_no_update(server, case, delivery, "ignored", "event_not_handled")
    # ...but never unverified
    r, delivery = send(client, server, case, case.payload(), **case.unknown_event,
                       **{h: "sha256=" + "0" * 64 for h in _signature_header(case)})
    assert r.status_code == 401, r.text
    expect_no_update(server, case, delivery, "rejected", "bad_signature")


def _signature_header(case: Case) -> list[str]:
    names = [k for k in case.headers(b"{}", "x") if k.lower() == SIGNATURE_HEADERS[case.forge]]
    assert len(names) == 1
    return names


@pytest.mark.parametrize(
    ("event", "file"),
    [
        ("Merge Request Hook", "gitlab_merge_request.json"),
        ("Pipeline Hook", "gitlab_pipeline.json"),
        ("Note Hook", "gitlab_note.json"),
    ],
)
def test_gitlab_merge_request_pipeline_note_are_200_ignored(
    client: httpx.Client, server: Server, event: str, file: str
) -> None:
    case = CASES["gitlab"]
    body = (PAYLOADS / file).read_bytes()
    delivery = new_id()
    headers = case.headers(body, delivery)
    headers["X-Gitlab-Event"] = event
    r = post(client, server, case, body, headers)
    assert r.status_code == 200, r.text
    assert (r.json()["result"], r.json()["reason"]) == ("ignored", "event_not_handled")
    expect_no_update(server, case, delivery, "ignored", "event_not_handled")


def test_bitbucket_dc_push_without_links_is_accepted(client: httpx.Client, server: Server) -> None:
    case = CASES["bitbucket-dc"]  # watches https://bitbucket.acme.example/scm/PLAT/mesh-config.git
    body = (PAYLOADS / "bitbucket_dc_refs_changed_no_links.json").read_bytes()
    delivery = new_id()
    r = post(client, server, case, body, case.headers(body, delivery))
    assert r.status_code == 202, r.text
    assert r.json()["result"] == "accepted" and r.json()["ref"] == "refs/heads/main"
    (update,) = server.recorders[case.name].updates_for(delivery)
    assert update.project == ("PLAT", "mesh-config")


def test_bitbucket_dc_unsigned_test_connection_is_200_ping(
    client: httpx.Client, server: Server
) -> None:
    case = CASES["bitbucket-dc"]
    body = (PAYLOADS / "bitbucket_dc_ping.json").read_bytes()
    delivery = new_id()
    headers = {"Content-Type": "application/json", "X-Event-Key": "diagnostics:ping",
               "X-Request-Id": delivery}
    r = post(client, server, case, body, headers)
    assert r.status_code == 200, r.text
    assert (r.json()["result"], r.json()["reason"]) == ("ping", "unsigned_ping")
    expect_no_update(server, case, delivery, "ping", "unsigned_ping")
    # An unsigned push is still refused.
    push = (PAYLOADS / "bitbucket_dc_refs_changed.json").read_bytes()
    delivery = new_id()
    r = post(client, server, case, push, {"Content-Type": "application/json",
                                          "X-Event-Key": "repo:refs_changed",
                                          "X-Request-Id": delivery})
    assert r.status_code == 401
    expect_no_update(server, case, delivery, "rejected", "missing_signature")


def test_gitea_delete_event_is_audited_as_a_branch_deletion(
    client: httpx.Client, server: Server
) -> None:
    case = CASES["gitea"]
    body = (PAYLOADS / "gitea_delete.json").read_bytes()
    delivery = new_id()
    headers = case.headers(body, delivery)
    headers["X-Gitea-Event"] = "delete"
    r = post(client, server, case, body, headers)
    assert r.status_code == 200, r.text
    assert (r.json()["result"], r.json()["reason"]) == ("ignored", "branch_deleted")
    expect_no_update(server, case, delivery, "ignored", "branch_deleted")
    (audit,) = server.recorders[case.name].audits_for(delivery)
    assert audit.ref == "refs/heads/main" and audit.after == ZERO


@pytest.mark.parametrize("name", [n for n in ALL if n != "generic"])
def test_missing_event_header_is_400(client: httpx.Client, server: Server, name: str) -> None:
    case = CASES[name]
    body = encode(case.payload())
    delivery = new_id()
    headers = case.headers(body, delivery)
    for key in list(headers):
        if key.lower().endswith(("-event", "event-key")):
            del headers[key]
    r = post(client, server, case, body, headers)
    assert r.status_code == 400 and r.json()["reason"] == "missing_header", r.text
    expect_no_update(server, case, delivery, "rejected", "missing_header")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-16"],
)
def test_wrong_content_type_is_415(
    client: httpx.Client, server: Server, name: str, content_type: str
) -> None:
    case = CASES[name]
    r, delivery = send(client, server, case, case.payload(), **{"Content-Type": content_type})
    assert r.status_code == 415 and r.json()["reason"] == "unsupported_media_type"
    expect_no_update(server, case, delivery, "rejected", "unsupported_media_type")


@pytest.mark.parametrize("name", ALL)
def test_other_repository_is_ignored(client: httpx.Client, server: Server, name: str) -> None:
    case = CASES[name]
    payload = case.payload()
    case.mutate(payload, ref=None, after=None, repo="https://github.com/acme/other-config.git")
    r, delivery = send(client, server, case, payload)
    assert r.status_code == 200 and r.json() == {
        "result": "ignored",
        "reason": "repo_not_watched",
        "delivery_id": delivery,
    }
    expect_no_update(server, case, delivery, "ignored", "repo_not_watched")


@pytest.mark.parametrize("name", ALL)
def test_other_branch_is_ignored(client: httpx.Client, server: Server, name: str) -> None:
    case = CASES[name]
    payload = case.payload()
    case.mutate(payload, ref="refs/heads/feature/x", after=None, repo=None)
    r, delivery = send(client, server, case, payload)
    assert r.status_code == 200 and r.json()["reason"] == "branch_not_watched"
    expect_no_update(server, case, delivery, "ignored", "branch_not_watched")


@pytest.mark.parametrize("name", ALL)
def test_tag_push_is_ignored(client: httpx.Client, server: Server, name: str) -> None:
    case = CASES[name]
    payload = case.payload()
    case.mutate(payload, ref="refs/tags/v1.4.0", after=None, repo=None)
    extra = {"X-Gitlab-Event": "Tag Push Hook"} if case.forge == "gitlab" else {}
    if case.forge == "gitlab":
        payload["object_kind"] = "tag_push"
    r, delivery = send(client, server, case, payload, **extra)
    assert r.status_code == 200 and r.json()["reason"] == "tag_push", r.text
    expect_no_update(server, case, delivery, "ignored", "tag_push")


def test_gitlab_tag_push_sample_is_ignored(client: httpx.Client, server: Server) -> None:
    case = CASES["gitlab"]
    raw = (PAYLOADS / "gitlab_tag_push.json").read_bytes()
    delivery = new_id()
    headers = case.headers(raw, delivery)
    headers["X-Gitlab-Event"] = "Tag Push Hook"
    r = post(client, server, case, raw, headers)
    assert r.status_code == 200 and r.json()["reason"] == "tag_push"
    expect_no_update(server, case, delivery, "ignored", "tag_push")


@pytest.mark.parametrize("name", ALL)
def test_branch_deletion_is_recorded_not_acted_on(
    client: httpx.Client, server: Server, name: str
) -> None:
    case = CASES[name]
    payload = case.payload()
    case.mutate(payload, ref=None, after=ZERO, repo=None)
    r, delivery = send(client, server, case, payload)
    assert r.status_code == 200 and r.json()["reason"] == "branch_deleted", r.text
    assert r.json()["after"] == ZERO
    expect_no_update(server, case, delivery, "ignored", "branch_deleted")
    audit = server.recorders[name].audits_for(delivery)[0]
    assert audit.ref == "refs/heads/main" and audit.after == ZERO


@pytest.mark.parametrize(
    ("name", "event", "file"),
    [
        ("github", {"X-GitHub-Event": "ping"}, "github_ping.json"),
        ("bitbucket-dc", {"X-Event-Key": "diagnostics:ping"}, "bitbucket_dc_ping.json"),
    ],
)
def test_ping_is_answered_not_deployed(
    client: httpx.Client, server: Server, name: str, event: dict[str, str], file: str
) -> None:
    case = CASES[name]
    body = (PAYLOADS / file).read_bytes()
    delivery = new_id()
    headers = case.headers(body, delivery)
    headers.update(event)
    r = post(client, server, case, body, headers)
    assert r.status_code == 200 and r.json()["result"] == "ping"
    rec = server.recorders[name]
    assert rec.updates_for(delivery) == []
    assert [a.result for a in rec.audits_for(delivery)] == ["ping"]


def test_conflicting_duplicate_signature_headers_are_400(server: Server) -> None:
    case = CASES["github"]
    body = encode(case.payload())
    delivery = new_id()
    headers = case.headers(body, delivery)
    good = headers.pop("X-Hub-Signature-256")
    head = (
        f"POST /github/webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + f"X-Hub-Signature-256: {good}\r\nX-Hub-Signature-256: sha256={'0' * 64}\r\n"
        + "\r\n"
    ).encode("latin-1")
    status, data = raw_request(server.port, head, [body])
    assert status == 400 and response_json(data)["reason"] == "ambiguous_header"
    expect_no_update(server, case, delivery, "rejected", "ambiguous_header")


def test_unknown_forge_is_404(client: httpx.Client, server: Server) -> None:
    r = client.post(
        f"http://127.0.0.1:{server.port}/github/webhooks/sourceforge",
        content=b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 404 and r.json()["reason"] == "unknown_forge"


@pytest.mark.parametrize("forge", ["github", "gitlab", "gitea", "forgejo", "bitbucket", "generic"])
def test_forge_without_secret_refuses_even_valid_deliveries(
    client: httpx.Client, server: Server, forge: str
) -> None:
    case = next(c for c in CASES.values() if c.forge == forge)
    body = encode(case.payload())
    delivery = new_id()
    r = client.post(
        f"http://127.0.0.1:{server.port}/unconfigured/webhooks/{forge}",
        content=body,
        headers=case.headers(body, delivery),
    )
    assert r.status_code == 403 and r.json()["reason"] == "forge_not_configured"
    rec = server.recorders["unconfigured"]
    assert rec.updates_for(delivery) == []
    assert [(a.result, a.reason) for a in rec.audits_for(delivery)] == [
        ("rejected", "forge_not_configured")
    ]


def test_a_forge_secret_does_not_open_another_forge(client: httpx.Client, server: Server) -> None:
    # The github case's receiver has only a GitHub secret: GitLab deliveries are refused.
    case = CASES["gitlab"]
    body = encode(case.payload())
    r = client.post(server.url("github", "gitlab"), content=body, headers=case.headers(body))
    assert r.status_code == 403
