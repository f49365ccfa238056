"""Bitbucket Cloud and Bitbucket Data Center (Server), on one endpoint.

- signature: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>`; any other
  algorithm prefix (or none) is refused.
- event: `X-Event-Key`:
  - `repo:push` (Cloud): `push.changes[]`, each with `old` / `new` ref states
    (`new: null` is a deletion, `old: null` a creation);
  - `repo:refs_changed` (Data Center): `changes[]` with `refId`, `fromHash`, `toHash`;
  - `diagnostics:ping` (Data Center's "Test connection"): a ping.
- delivery: `X-Request-UUID` (Cloud) or `X-Request-Id` (Data Center), else a digest of the
  body. `X-Hook-UUID` names the hook, not the delivery, so it is never used to deduplicate.

One Bitbucket delivery can move several refs; each becomes a `RefUpdate`.
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
)
from webhooks.errors import InvalidPayload, UnsupportedEvent
from webhooks.headers import printable
from webhooks.model import BRANCH_PREFIX, TAG_PREFIX, Ping, Push, RefUpdate
from webhooks.signatures import verify_prefixed
from webhooks.strict_json import Obj, check_ref, loads_object

FORGE = "bitbucket"
CLOUD_PUSH = "repo:push"
DC_REFS_CHANGED = "repo:refs_changed"
DC_PING = "diagnostics:ping"
_REF_KIND = {
    "branch": BRANCH_PREFIX,
    "named_branch": BRANCH_PREFIX,
    "tag": TAG_PREFIX,
    "annotated_tag": TAG_PREFIX,
}


def parse(headers: HeaderSource, body: bytes, secret: bytes) -> Push | Ping:
    require_secret(secret)
    h = as_headers(headers)
    verify_prefixed(h, "X-Hub-Signature", secret, body)
    event = h.require("X-Event-Key")
    if event not in (CLOUD_PUSH, DC_REFS_CHANGED, DC_PING):
        raise UnsupportedEvent(f"Bitbucket event {printable(event, 40)!r} is not handled")
    require_json(h)
    delivery = delivery_id(h, ("X-Request-UUID", "X-Request-Id"), body)
    payload = loads_object(body)
    if event == DC_PING:
        return Ping(forge=FORGE, delivery_id=delivery, event=event)
    repository = payload.obj("repository")
    found = require_urls(_links(repository), repository.path)
    if event == CLOUD_PUSH:
        updates = _cloud_updates(payload, found, delivery, event)
    else:
        updates = _dc_updates(payload, found, delivery, event)
    return Push(forge=FORGE, delivery_id=delivery, event=event, updates=tuple(updates))


def _hrefs(links: Obj, key: str) -> list[str]:
    """Cloud writes `{"html": {"href": ...}}`; Data Center writes lists of `{"href": ...}`."""
    value = links.raw(key)
    if value is None:
        return []
    items = links.objs(key) if isinstance(value, list) else [links.obj(key)]
    return [href for item in items if (href := item.opt_string("href"))]


def _links(repository: Obj) -> list[str]:
    links = repository.opt_obj("links")
    if links is None:
        return []
    return _hrefs(links, "clone") + _hrefs(links, "html")


def _actor(payload: Obj) -> str | None:
    actor = payload.opt_obj("actor")
    if actor is None:
        return None
    for key in ("nickname", "username", "name", "slug", "display_name", "displayName"):
        value = actor.opt_string(key)
        if value:
            return value
    return None


def _cloud_state(change: Obj, key: str) -> tuple[str, str] | None:
    """(ref, commit) for `old` / `new`, or None when the state is null."""
    state = change.opt_obj(key)
    if state is None:
        return None
    kind = state.string("type")
    prefix = _REF_KIND.get(kind)
    if prefix is None:
        raise InvalidPayload(f"{state.path}.type {printable(kind, 30)!r} is not a git ref type")
    ref = check_ref(prefix + state.string("name"), f"{state.path}.name")
    return ref, state.obj("target").sha("hash")


def _cloud_updates(payload: Obj, urls: list[str], delivery: str, event: str) -> list[RefUpdate]:
    out: list[RefUpdate] = []
    for change in payload.obj("push").objs("changes"):
        old = _cloud_state(change, "old")
        new = _cloud_state(change, "new")
        if old is None and new is None:
            raise InvalidPayload(f"{change.path} has neither old nor new")
        if old and new and old[0] != new[0]:
            raise InvalidPayload(f"{change.path}: old and new name different refs")
        ref = (new or old or ("", ""))[0]
        # A null side is the zero commit, as long as the other side's hash.
        after = new[1] if new else "0" * len(old[1] if old else "")
        before = old[1] if old else "0" * len(after)
        out.append(
            ref_update(
                forge=FORGE,
                repo_urls=urls,
                ref=ref,
                before=before,
                after=after,
                delivery=delivery,
                pusher=_actor(payload),
                event=event,
                path=change.path,
            )
        )
    return out


def _dc_updates(payload: Obj, urls: list[str], delivery: str, event: str) -> list[RefUpdate]:
    out: list[RefUpdate] = []
    for change in payload.objs("changes"):
        out.append(
            ref_update(
                forge=FORGE,
                repo_urls=urls,
                ref=change.ref("refId"),
                before=change.sha("fromHash"),
                after=change.sha("toHash"),
                delivery=delivery,
                pusher=_actor(payload),
                event=event,
                path=change.path,
            )
        )
    return out
