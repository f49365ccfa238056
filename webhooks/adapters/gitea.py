"""Gitea and Forgejo (Forgejo is a Gitea fork and keeps its payloads).

- signature: `X-Gitea-Signature` / `X-Forgejo-Signature`: bare hex HMAC-SHA256 of the raw
  body. Forgejo also sends the `X-Gitea-*` headers; it is read when `X-Forgejo-*` is absent.
- event: `X-Gitea-Event` / `X-Forgejo-Event`: `push` (a tag push is a push of refs/tags/...).
- delivery: `X-Gitea-Delivery` / `X-Forgejo-Delivery` (a UUID).
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
from webhooks.errors import MissingHeader, UnsupportedEvent
from webhooks.headers import Headers, printable
from webhooks.model import Push
from webhooks.signatures import verify_bare_hex
from webhooks.strict_json import loads_object

REPO_URL_KEYS = ("clone_url", "ssh_url", "html_url", "original_url")


def _parse(forge: str, prefixes: tuple[str, ...], headers: Headers, body: bytes) -> Push:
    event = headers.first(*(f"X-{p.title()}-Event" for p in prefixes))
    if event is None:
        raise MissingHeader(f"header X-{prefixes[0].title()}-Event is missing")
    if event != "push":
        raise UnsupportedEvent(f"{forge} event {printable(event, 40)!r} is not handled")
    require_json(headers)
    delivery = delivery_id(
        headers, tuple(f"X-{p.title()}-Delivery" for p in prefixes), body, required=True
    )
    payload = loads_object(body)
    repository = payload.obj("repository")
    pusher = payload.opt_obj("pusher")
    payload.opt_arr("commits")
    update = ref_update(
        forge=forge,
        repo_urls=require_urls(urls(repository, REPO_URL_KEYS), repository.path),
        ref=payload.ref("ref"),
        before=payload.sha("before"),
        after=payload.sha("after"),
        delivery=delivery,
        pusher=(pusher.opt_string("login") or pusher.opt_string("username")) if pusher else None,
        event=event,
        path=payload.path,
    )
    return Push(forge=forge, delivery_id=delivery, event=event, updates=(update,))


def parse_gitea(headers: HeaderSource, body: bytes, secret: bytes) -> Push:
    require_secret(secret)
    h = as_headers(headers)
    verify_bare_hex(h, ("X-Gitea-Signature",), secret, body)
    return _parse("gitea", ("gitea",), h, body)


def parse_forgejo(headers: HeaderSource, body: bytes, secret: bytes) -> Push:
    require_secret(secret)
    h = as_headers(headers)
    verify_bare_hex(h, ("X-Forgejo-Signature", "X-Gitea-Signature"), secret, body)
    return _parse("forgejo", ("forgejo", "gitea"), h, body)
