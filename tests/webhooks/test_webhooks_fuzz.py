"""Hypothesis: whatever arrives, an adapter returns a Push/Ping or raises a Rejection -
never anything else. Three layers, so the fuzzing reaches past the signature check:
arbitrary headers and bytes; correctly signed arbitrary JSON built from the field names
the adapters read; and correctly signed real payloads with one value replaced."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_cases import CASES, PAYLOADS

from webhooks.adapters import ADAPTERS
from webhooks.errors import Rejection
from webhooks.model import Ping, Push

SECRET = b"fuzz-secret"
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HEADER_NAMES = [
    "Content-Type",
    "Content-Encoding",
    "X-Hub-Signature-256",
    "X-Hub-Signature",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-Gitlab-Token",
    "X-Gitlab-Event",
    "X-Gitlab-Event-UUID",
    "Idempotency-Key",
    "X-Gitea-Signature",
    "X-Gitea-Event",
    "X-Gitea-Delivery",
    "X-Forgejo-Signature",
    "X-Forgejo-Event",
    "X-Forgejo-Delivery",
    "X-Event-Key",
    "X-Request-UUID",
    "X-Request-Id",
    "X-Meshcd-Signature",
    "X-Meshcd-Delivery",
]
FIELDS = [
    "ref",
    "before",
    "after",
    "repository",
    "clone_url",
    "ssh_url",
    "html_url",
    "git_url",
    "pusher",
    "name",
    "login",
    "commits",
    "object_kind",
    "project",
    "git_http_url",
    "git_ssh_url",
    "web_url",
    "user_username",
    "push",
    "changes",
    "old",
    "new",
    "type",
    "target",
    "hash",
    "links",
    "clone",
    "html",
    "href",
    "refId",
    "fromHash",
    "toHash",
    "actor",
    "nickname",
    "repo",
]
SHAPED = st.sampled_from(
    [
        "refs/heads/main",
        "refs/tags/v1",
        "a" * 40,
        "0" * 40,
        "b" * 64,
        "push",
        "tag_push",
        "branch",
        "tag",
        "https://github.com/acme/mesh-config.git",
        "git@h:o/r.git",
        "main",
        "",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | SHAPED
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)
JSON_OBJECTS = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=8)
EVENTS = {
    "github": [
        {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"},
        {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d-1"},
    ],
    "gitlab": [{"X-Gitlab-Event": "Push Hook"}, {"X-Gitlab-Event": "Tag Push Hook"}],
    "gitea": [{"X-Gitea-Event": "push", "X-Gitea-Delivery": "d-1"}],
    "forgejo": [{"X-Forgejo-Event": "push", "X-Forgejo-Delivery": "d-1"}],
    "bitbucket": [
        {"X-Event-Key": "repo:push"},
        {"X-Event-Key": "repo:refs_changed"},
        {"X-Event-Key": "diagnostics:ping"},
    ],
    "generic": [{}],
}


def run(forge: str, headers: dict[str, str], body: bytes) -> None:
    try:
        result = ADAPTERS[forge](headers, body, SECRET)
    except Rejection as rejection:
        assert 400 <= rejection.status < 500 and rejection.reason
        return
    assert isinstance(result, Push | Ping)
    if isinstance(result, Push):
        for update in result.updates:
            assert update.ref.startswith("refs/") and len(update.after) in (40, 64)


def signed(forge: str, body: bytes, events: dict[str, str]) -> dict[str, str]:
    from webhooks.sample import signature_headers

    return {"Content-Type": "application/json", **events, **signature_headers(forge, body, SECRET)}


@pytest.mark.parametrize("forge", list(ADAPTERS))
@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(HEADER_NAMES) | st.text(max_size=12), st.text(max_size=80), max_size=8
    ),
    body=st.binary(max_size=512),
)
def test_arbitrary_headers_and_bytes(forge: str, headers: dict[str, str], body: bytes) -> None:
    run(forge, headers, body)


@pytest.mark.parametrize("forge", list(ADAPTERS))
@FUZZ
@given(data=st.data(), payload=JSON_OBJECTS)
def test_signed_arbitrary_json(forge: str, data: st.DataObject, payload: dict[str, Any]) -> None:
    events = data.draw(st.sampled_from(EVENTS[forge]))
    body = json.dumps(payload).encode()
    run(forge, signed(forge, body, events), body)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@pytest.mark.parametrize("name", list(CASES))
@FUZZ
@given(data=st.data())
def test_signed_real_payload_with_one_value_replaced(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    payload = json.loads((PAYLOADS / case.payload_file).read_text())
    path = data.draw(st.sampled_from(_paths(payload)))
    node = payload
    for key in path[:-1]:
        node = node[key]
    if data.draw(st.booleans()):
        node[path[-1]] = data.draw(JSON_VALUES)
    elif isinstance(node, dict):
        del node[path[-1]]
    body = json.dumps(payload).encode()
    run(case.forge, signed(case.forge, body, case.event_headers("d-1")), body)
