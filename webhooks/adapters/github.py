"""GitHub (github.com and Enterprise Server).

- signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`. The legacy
  SHA-1 `X-Hub-Signature` is never accepted, even when it is the only one sent.
- event: `X-GitHub-Event`: `push`, or `ping` (sent when the hook is created); any other
  event, verified, is `Ignored` (200).
- delivery: `X-GitHub-Delivery` (a GUID; a "Redeliver" from the UI reuses it).
"""

from __future__ import annotations

from webhooks.adapters._common import (
    HeaderSource,
    as_headers,
    delivery_id,
    ref_update,
    require_json,
    require_secret,
    require_urls,
    urls,
)
from webhooks.errors import UnsupportedAlgorithm
from webhooks.headers import printable
from webhooks.model import Ignored, Ping, Push
from webhooks.signatures import verify_prefixed
from webhooks.strict_json import loads_object

FORGE = "github"
REPO_URL_KEYS = ("clone_url", "ssh_url", "git_url", "html_url", "svn_url")


def parse(headers: HeaderSource, body: bytes, secret: bytes) -> Push | Ping | Ignored:
    require_secret(secret)
    h = as_headers(headers)
    if h.get("X-Hub-Signature-256") is None and h.get("X-Hub-Signature") is not None:
        raise UnsupportedAlgorithm("X-Hub-Signature (SHA-1) is never accepted; use SHA-256")
    verify_prefixed(h, "X-Hub-Signature-256", secret, body)
    event = h.require("X-GitHub-Event")
    delivery = delivery_id(h, ("X-GitHub-Delivery",), body, required=True)
    if event not in ("push", "ping"):
        return Ignored(FORGE, delivery, printable(event, 40))
    require_json(h)
    payload = loads_object(body)
    if event == "ping":
        return Ping(forge=FORGE, delivery_id=delivery, event=event)
    repository = payload.obj("repository")
    pusher = payload.opt_obj("pusher")
    sender = payload.opt_obj("sender")
    payload.opt_arr("commits")
    update = ref_update(
        forge=FORGE,
        repo_urls=require_urls(urls(repository, REPO_URL_KEYS), repository.path),
        ref=payload.ref("ref"),
        before=payload.sha("before"),
        after=payload.sha("after"),
        delivery=delivery,
        pusher=(pusher.opt_string("name") if pusher else None)
        or (sender.opt_string("login") if sender else None),
        event=event,
        path=payload.path,
    )
    return Push(forge=FORGE, delivery_id=delivery, event=event, updates=(update,))
