"""GitLab (gitlab.com and self-managed).

- secret: `X-Gitlab-Token` holds the secret token itself (GitLab does not sign the body);
  it is compared in constant time.
- event: `X-Gitlab-Event`: `Push Hook` or `Tag Push Hook`; the body's `object_kind`
  (`push` / `tag_push`) must agree. Any other event with a valid token (a merge request, a
  pipeline, a note...) is `Ignored`, answered 200: GitLab disables a hook after 4 failures in a
  row, and a hook with extra triggers ticked would then stop delivering pushes.
- delivery: `Idempotency-Key` (GitLab 17.4+, stable across retries), else
  `X-Gitlab-Event-UUID`, else a digest of the body. `X-Gitlab-Webhook-UUID` names the hook,
  not the delivery, so it is never used to deduplicate.
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
from webhooks.errors import InvalidPayload
from webhooks.headers import printable
from webhooks.model import Ignored, Push
from webhooks.signatures import verify_token
from webhooks.strict_json import loads_object

FORGE = "gitlab"
EVENTS = {"Push Hook": "push", "Tag Push Hook": "tag_push"}
PROJECT_URL_KEYS = ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url")
REPOSITORY_URL_KEYS = ("git_http_url", "git_ssh_url", "url", "homepage")


_DELIVERY_HEADERS = ("Idempotency-Key", "X-Gitlab-Event-UUID")


def parse(headers: HeaderSource, body: bytes, secret: bytes) -> Push | Ignored:
    require_secret(secret)
    h = as_headers(headers)
    verify_token(h, "X-Gitlab-Token", secret)
    event = h.require("X-Gitlab-Event")
    kind = EVENTS.get(event)
    if kind is None:
        return Ignored(FORGE, delivery_id(h, _DELIVERY_HEADERS, body), printable(event, 40))
    require_json(h)
    delivery = delivery_id(h, _DELIVERY_HEADERS, body)
    payload = loads_object(body)
    object_kind = payload.string("object_kind")
    if object_kind != kind:
        raise InvalidPayload(f"$.object_kind is {printable(object_kind, 40)!r}, event says {kind}")
    project = payload.opt_obj("project")
    repository = payload.opt_obj("repository")
    if project is None and repository is None:
        raise InvalidPayload("$.project is missing (an object expected)")
    payload.opt_arr("commits")
    found = urls(project, PROJECT_URL_KEYS) + urls(repository, REPOSITORY_URL_KEYS)
    update = ref_update(
        forge=FORGE,
        repo_urls=require_urls(found, payload.path),
        ref=payload.ref("ref"),
        before=payload.sha("before"),
        after=payload.sha("after"),
        delivery=delivery,
        pusher=payload.opt_string("user_username") or payload.opt_string("user_name"),
        event=event,
        path=payload.path,
    )
    return Push(forge=FORGE, delivery_id=delivery, event=event, updates=(update,))
