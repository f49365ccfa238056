"""Gitea and Forgejo (Forgejo is a Gitea fork and keeps its payloads).

- signature: `X-Gitea-Signature` / `X-Forgejo-Signature`: bare hex HMAC-SHA256 of the raw
  body. Forgejo also sends the `X-Gitea-*` headers; it is read when `X-Forgejo-*` is absent.
- event: `X-Gitea-Event` / `X-Forgejo-Event`: `push` (a tag push is a push of refs/tags/...);
  `delete` (how Gitea and Forgejo report a deleted branch or tag: not as a push) becomes a
  deletion `RefUpdate` (its `before` is unknown: zeros), which is audited and never acted on;
  any other event, verified, is `Ignored` (200).
- delivery: `X-Gitea-Delivery` / `X-Forgejo-Delivery` (a UUID).
"""

from __future__ import annotations

from webhooks.adapters._common import (
    HeaderSource,
    as_headers,
    dedupe,
    delivery_id,
    ref_update,
    require_json,
    require_secret,
    require_urls,
    urls,
)
from webhooks.errors import InvalidPayload, MissingHeader
from webhooks.headers import Headers, printable
from webhooks.model import BRANCH_PREFIX, TAG_PREFIX, ZERO_SHA1, Ignored, Push, RefUpdate
from webhooks.signatures import verify_bare_hex
from webhooks.strict_json import Obj, check_ref, loads_object

REPO_URL_KEYS = ("clone_url", "ssh_url", "html_url", "original_url")


_REF_TYPES = {"branch": BRANCH_PREFIX, "tag": TAG_PREFIX}


def _parse(
    forge: str, prefixes: tuple[str, ...], headers: Headers, body: bytes
) -> Push | Ignored:
    event = headers.first(*(f"X-{p.title()}-Event" for p in prefixes))
    if event is None:
        raise MissingHeader(f"header X-{prefixes[0].title()}-Event is missing")
    delivery = delivery_id(
        headers, tuple(f"X-{p.title()}-Delivery" for p in prefixes), body, required=True
    )
    if event not in ("push", "delete"):
        return Ignored(forge, delivery, printable(event, 40))
    require_json(headers)
    payload = loads_object(body)
    if event == "delete":
        return _deletion(forge, payload, delivery, event)
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


def _deletion(forge: str, payload: Obj, delivery: str, event: str) -> Push:
    """`{"ref": "<short name>", "ref_type": "branch" | "tag", "repository": {...}}`."""
    ref_type = payload.string("ref_type")
    prefix = _REF_TYPES.get(ref_type)
    if prefix is None:
        raise InvalidPayload(f"$.ref_type {printable(ref_type, 30)!r} is not branch or tag")
    name = payload.string("ref")
    ref = check_ref(name if name.startswith("refs/") else prefix + name, f"{payload.path}.ref")
    repository = payload.obj("repository")
    sender = payload.opt_obj("sender")
    update = RefUpdate(
        forge=forge,
        repo_urls=dedupe(require_urls(urls(repository, REPO_URL_KEYS), repository.path)),
        ref=ref,
        before=ZERO_SHA1,  # not in the payload
        after=ZERO_SHA1,
        delivery_id=delivery,
        pusher=((sender.opt_string("login") or sender.opt_string("username") or "") if sender
                else "")[:256],
        event=event,
    )
    return Push(forge=forge, delivery_id=delivery, event=event, updates=(update,))


def parse_gitea(headers: HeaderSource, body: bytes, secret: bytes) -> Push | Ignored:
    require_secret(secret)
    h = as_headers(headers)
    verify_bare_hex(h, ("X-Gitea-Signature",), secret, body)
    return _parse("gitea", ("gitea",), h, body)


def parse_forgejo(headers: HeaderSource, body: bytes, secret: bytes) -> Push | Ignored:
    require_secret(secret)
    h = as_headers(headers)
    verify_bare_hex(h, ("X-Forgejo-Signature", "X-Gitea-Signature"), secret, body)
    return _parse("forgejo", ("forgejo", "gitea"), h, body)
