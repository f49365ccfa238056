"""Shared test data: one case per forge flavour (payload file, headers, how to mutate the
payload), and small helpers to send deliveries over real sockets."""

from __future__ import annotations

import copy
import json
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhooks.sample import signature_headers

PAYLOADS = Path(__file__).parent / "payloads"
ZERO = "0" * 40
NEW_SHA = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"

Payload = dict[str, Any]


def _github_set(p: Payload, *, ref: str | None, after: str | None, repo: str | None) -> None:
    if ref is not None:
        p["ref"] = ref
    if after is not None:
        p["after"] = after
        p["deleted"] = after == ZERO
    if repo is not None:
        r = p["repository"]
        for key in ("html_url", "url", "git_url", "ssh_url", "clone_url", "svn_url"):
            if key in r:
                r[key] = repo


def _gitlab_set(p: Payload, *, ref: str | None, after: str | None, repo: str | None) -> None:
    if ref is not None:
        p["ref"] = ref
    if after is not None:
        p["after"] = after
        p["checkout_sha"] = None if after == ZERO else after
    if repo is not None:
        for node in (p["project"], p["repository"]):
            for key in list(node):
                if key in (
                    "web_url",
                    "git_ssh_url",
                    "git_http_url",
                    "url",
                    "homepage",
                    "ssh_url",
                    "http_url",
                ):
                    node[key] = repo


def _gitea_set(p: Payload, *, ref: str | None, after: str | None, repo: str | None) -> None:
    if ref is not None:
        p["ref"] = ref
    if after is not None:
        p["after"] = after
    if repo is not None:
        for key in ("html_url", "ssh_url", "clone_url"):
            p["repository"][key] = repo


def _bb_cloud_set(p: Payload, *, ref: str | None, after: str | None, repo: str | None) -> None:
    change = p["push"]["changes"][0]
    if ref is not None:
        kind, name = ("tag", ref[10:]) if ref.startswith("refs/tags/") else ("branch", ref[11:])
        for side in ("old", "new"):
            if change[side] is not None:
                change[side]["type"] = kind
                change[side]["name"] = name
    if after is not None:
        if after == ZERO:
            change["new"] = None
            change["closed"] = True
        else:
            change["new"]["target"]["hash"] = after
    if repo is not None:
        p["repository"]["links"]["html"]["href"] = repo


def _bb_dc_set(p: Payload, *, ref: str | None, after: str | None, repo: str | None) -> None:
    change = p["changes"][0]
    if ref is not None:
        change["refId"] = ref
        change["ref"]["id"] = ref
    if after is not None:
        change["toHash"] = after
        change["type"] = "DELETE" if after == ZERO else "UPDATE"
    if repo is not None:
        for link in p["repository"]["links"]["clone"]:
            link["href"] = repo


def _generic_set(p: Payload, *, ref: str | None, after: str | None, repo: str | None) -> None:
    if ref is not None:
        p["ref"] = ref
    if after is not None:
        p["after"] = after
    if repo is not None:
        p["repo"] = repo


@dataclass(frozen=True)
class Case:
    name: str  # also the URL prefix of this case's router on the test server
    forge: str
    payload_file: str
    watched_repo: str  # deliberately a different URL form than the payload uses
    event_headers: Callable[[str], dict[str, str]]
    mutate: Callable[..., None]
    array_path: tuple[str, ...]  # a field documented as an array, for the wrong-type test
    required_path: tuple[str, ...]  # a field the adapter needs, for the missing-field test
    unknown_event: dict[str, str] | None  # headers naming an event we do not handle
    secret: bytes = b"It's a test secret for the receiver"

    def payload(self) -> Payload:
        data: Payload = json.loads((PAYLOADS / self.payload_file).read_text())
        return copy.deepcopy(data)

    def headers(
        self, body: bytes, delivery: str | None = None, secret: bytes | None = None
    ) -> dict[str, str]:
        h = {"Content-Type": "application/json", **self.event_headers(delivery or new_id())}
        h.update(signature_headers(self.forge, body, self.secret if secret is None else secret))
        return h


def new_id() -> str:
    return str(uuid.uuid4())


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case(
            "github",
            "github",
            "github_push.json",
            "git@github.com:ACME/Mesh-Config.git",
            lambda d: {"X-GitHub-Event": "push", "X-GitHub-Delivery": d},
            _github_set,
            ("commits",),
            ("ref",),
            {"X-GitHub-Event": "issues"},
        ),
        Case(
            "gitlab",
            "gitlab",
            "gitlab_push.json",
            "https://GitLab.example.com/platform/mesh/mesh-config/",
            lambda d: {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": d},
            _gitlab_set,
            ("commits",),
            ("after",),
            {"X-Gitlab-Event": "Merge Request Hook"},
        ),
        Case(
            "gitea",
            "gitea",
            "gitea_push.json",
            "git@gitea.example.com:platform/mesh-config.git",
            lambda d: {"X-Gitea-Event": "push", "X-Gitea-Delivery": d},
            _gitea_set,
            ("commits",),
            ("repository",),
            {"X-Gitea-Event": "issues"},
        ),
        Case(
            "forgejo",
            "forgejo",
            "forgejo_push.json",
            "https://codeberg.org/platform/mesh-config.git",
            lambda d: {"X-Forgejo-Event": "push", "X-Forgejo-Delivery": d},
            _gitea_set,
            ("commits",),
            ("before",),
            {"X-Forgejo-Event": "pull_request"},
        ),
        Case(
            "bitbucket-cloud",
            "bitbucket",
            "bitbucket_cloud_push.json",
            "git@bitbucket.org:acme/mesh-config.git",
            lambda d: {"X-Event-Key": "repo:push", "X-Request-UUID": d},
            _bb_cloud_set,
            ("push", "changes"),
            ("push",),
            {"X-Event-Key": "pullrequest:created"},
        ),
        Case(
            "bitbucket-dc",
            "bitbucket",
            "bitbucket_dc_refs_changed.json",
            "https://bitbucket.acme.example/scm/PLAT/mesh-config.git",
            lambda d: {"X-Event-Key": "repo:refs_changed", "X-Request-Id": d},
            _bb_dc_set,
            ("changes",),
            ("changes",),
            {"X-Event-Key": "pr:opened"},
        ),
        Case(
            "generic",
            "generic",
            "generic_push.json",
            "file:///srv/git/mesh-config.git",
            lambda d: {"X-Meshcd-Delivery": d},
            _generic_set,
            ("repo",),
            ("after",),
            None,
        ),
    ]
}


def dig(p: Payload, path: tuple[str, ...]) -> tuple[Payload, str]:
    node = p
    for key in path[:-1]:
        node = node[key]
    return node, path[-1]


def encode(p: Payload) -> bytes:
    return json.dumps(p).encode()


def raw_request(
    port: int, head: bytes, body_parts: list[bytes], *, read_timeout: float = 15.0
) -> tuple[int, bytes]:
    """Send a hand-built request over a plain socket; return (status, whole response).

    Stops sending as soon as the server has answered (it may refuse before the body ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.settimeout(0.0)
            try:
                early = sock.recv(65536)
            except BlockingIOError:
                early = b""
            sock.settimeout(read_timeout)
            if early:
                return _status(early + _drain(sock)), early
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = _drain(sock)
    return _status(data), data


def _drain(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
        if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
            break
    return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def _status(data: bytes) -> int:
    if not data.startswith(b"HTTP/1.1 "):
        return 0
    return int(data[9:12])


def response_json(data: bytes) -> dict[str, Any]:
    body = data.partition(b"\r\n\r\n")[2]
    parsed: dict[str, Any] = json.loads(body)
    return parsed
