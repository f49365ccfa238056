"""Bitbucket Cloud and Bitbucket Data Center (Server), on one endpoint.

- signature: `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>`; any other
  algorithm prefix (or none) is refused.
- event: `X-Event-Key`:
  - `repo:push` (Cloud): `push.changes[]`, each with `old` / `new` ref states
    (`new: null` is a deletion, `old: null` a creation);
  - `repo:refs_changed` (Data Center): `changes[]` with `refId`, `fromHash`, `toHash`;
  - `diagnostics:ping` (Data Center's "Test connection"): a ping. Data Center sends it
    without `X-Hub-Signature` even when the hook has a secret; such a ping is answered (an
    unsigned `Ping`) before any verification, and its body is never parsed;
  - any other event, verified: `Ignored` (200, so Bitbucket's failing-hook cut-off never
    counts it).
- repository: the clone and web links; Data Center versions that send no `repository.links`
  name it by `project.key` + `slug`, matched against the watched URL's path.
- delivery: `X-Request-UUID` (Cloud) or `X-Request-Id` (Data Center), else a digest of the
  body. `X-Hook-UUID` names the hook, not the delivery, so it is never used to deduplicate.

One Bitbucket delivery can move several refs; each becomes a `RefUpdate`.
"""

from __future__ import annotations

import re

from webhooks.adapters._common import (
    HeaderSource,
    as_headers,
    delivery_id,
    ref_update,
    require_json,
    require_secret,
    require_urls,
)
from webhooks.errors import InvalidPayload
from webhooks.headers import printable
from webhooks.model import BRANCH_PREFIX, TAG_PREFIX, Ignored, Ping, Push, RefUpdate
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
_DELIVERY_HEADERS = ("X-Request-UUID", "X-Request-Id")
# Project keys: letters, digits, "_" (and "~user" for personal projects); slugs: letters,
# digits, "-", "_", ".".
_PROJECT_KEY = re.compile(r"~?[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_SLUG = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def parse(headers: HeaderSource, body: bytes, secret: bytes) -> Push | Ping | Ignored:
    require_secret(secret)
    h = as_headers(headers)
    if h.get("X-Event-Key") == DC_PING and h.get("X-Hub-Signature") is None:
        # "Test connection" is never signed: answer it, trust nothing in it, trigger nothing.
        return Ping(FORGE, delivery_id(h, _DELIVERY_HEADERS, body), DC_PING, signed=False)
    verify_prefixed(h, "X-Hub-Signature", secret, body)
    event = h.require("X-Event-Key")
    if event not in (CLOUD_PUSH, DC_REFS_CHANGED, DC_PING):
        return Ignored(FORGE, delivery_id(h, _DELIVERY_HEADERS, body), printable(event, 40))
    require_json(h)
    delivery = delivery_id(h, _DELIVERY_HEADERS, body)
    payload = loads_object(body)
    if event == DC_PING:
        return Ping(forge=FORGE, delivery_id=delivery, event=event)
    repository = payload.obj("repository")
    found = _links(repository)
    if event == CLOUD_PUSH:
        urls = require_urls(found, repository.path)
        updates = _cloud_updates(payload, urls, delivery, event)
    else:
        project = None if found else _project(repository)
        updates = _dc_updates(payload, found, project, delivery, event)
    return Push(forge=FORGE, delivery_id=delivery, event=event, updates=tuple(updates))


def _project(repository: Obj) -> tuple[str, str]:
    """(project key, slug) of a Data Center repository whose payload has no links."""
    key = repository.obj("project").string("key")
    slug = repository.string("slug")
    if not _PROJECT_KEY.fullmatch(key):
        raise InvalidPayload(f"{repository.path}.project.key is not a project key")
    if not _SLUG.fullmatch(slug):
        raise InvalidPayload(f"{repository.path}.slug is not a repository slug")
    return key, slug


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


def _dc_updates(
    payload: Obj, urls: list[str], project: tuple[str, str] | None, delivery: str, event: str
) -> list[RefUpdate]:
    out: list[RefUpdate] = []
    for change in payload.objs("changes"):
        out.append(
            ref_update(
                forge=FORGE,
                repo_urls=urls,
                project=project,
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
