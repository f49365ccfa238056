"""Generic: for anything that is not a forge (a post-receive hook, a CI job).

    POST /webhooks/generic
    Content-Type: application/json
    X-Meshcd-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>
    X-Meshcd-Delivery: <optional unique id, 1-128 of [A-Za-z0-9._:-{}]>

    {"repo": "<clone URL>", "ref": "refs/heads/main",
     "before": "<40 or 64 hex>", "after": "<40 or 64 hex>", "pusher": "<name, optional>"}

Unknown keys are refused so that a typo ("branch" for "ref") is an error, not a no-op.
"""

from __future__ import annotations

from webhooks.adapters._common import (
    HeaderSource,
    as_headers,
    delivery_id,
    ref_update,
    require_json,
    require_secret,
)
from webhooks.errors import InvalidPayload
from webhooks.model import Push
from webhooks.repo_url import InvalidRepoUrl, canonical_repo_key
from webhooks.signatures import verify_prefixed
from webhooks.strict_json import loads_object

FORGE = "generic"
EVENT = "push"
SIGNATURE_HEADER = "X-Meshcd-Signature"
DELIVERY_HEADER = "X-Meshcd-Delivery"
KEYS = {"repo", "ref", "before", "after", "pusher"}


def parse(headers: HeaderSource, body: bytes, secret: bytes) -> Push:
    require_secret(secret)
    h = as_headers(headers)
    verify_prefixed(h, SIGNATURE_HEADER, secret, body)
    require_json(h)
    delivery = delivery_id(h, (DELIVERY_HEADER,), body)
    payload = loads_object(body)
    unknown = payload.keys() - KEYS
    if unknown:
        raise InvalidPayload(f"unknown keys: {', '.join(sorted(k[:40] for k in unknown)[:5])}")
    repo = payload.string("repo")
    try:  # we own this format, so an unusable URL is the sender's error, not a mismatch
        canonical_repo_key(repo)
    except InvalidRepoUrl as err:
        raise InvalidPayload(f"$.repo is not a repository URL: {err}") from None
    update = ref_update(
        forge=FORGE,
        repo_urls=[repo],
        ref=payload.ref("ref"),
        before=payload.sha("before"),
        after=payload.sha("after"),
        delivery=delivery,
        pusher=payload.opt_string("pusher"),
        event=EVENT,
        path=payload.path,
    )
    return Push(forge=FORGE, delivery_id=delivery, event=EVENT, updates=(update,))
