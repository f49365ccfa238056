"""Pieces every adapter shares: the secret guard, the media-type check, delivery ids, and
building `RefUpdate`s from checked fields."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

from webhooks.errors import (
    BadHeader,
    InvalidPayload,
    MissingHeader,
    NotConfigured,
    UnsupportedMediaType,
)
from webhooks.headers import Headers
from webhooks.model import RefUpdate
from webhooks.strict_json import Obj, check_pair

_DELIVERY_ID = re.compile(r"[A-Za-z0-9._:\-{}]{1,128}")

HeaderSource = Mapping[str, str] | Headers


def as_headers(headers: HeaderSource) -> Headers:
    return headers if isinstance(headers, Headers) else Headers(headers)


def require_secret(secret: bytes) -> None:
    # An empty key makes every HMAC forgeable: refuse, the same as no secret at all.
    if not secret:
        raise NotConfigured("no secret is configured for this forge")


def require_json(headers: Headers) -> None:
    """Only `application/json` (UTF-8) bodies; form-encoded hooks and compressed bodies are
    refused so there is exactly one way to read a body."""
    value = headers.get("content-type")
    if value is None:
        raise UnsupportedMediaType("Content-Type must be application/json")
    media, *params = (part.strip().lower() for part in value.split(";"))
    if media != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {media[:40]!r}")
    for param in params:
        name, _, charset = param.partition("=")
        if name.strip() == "charset" and charset.strip().strip('"') not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("only UTF-8 bodies are accepted")
    encoding = headers.get("content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType("compressed bodies are not accepted")


def delivery_id(
    headers: Headers, names: tuple[str, ...], body: bytes, *, required: bool = False
) -> str:
    """The forge's delivery id. Forges that always send one (`required`) are refused without
    it; for the others (older versions, the generic sender) a digest of the body stands in,
    so that a byte-identical resend still deduplicates."""
    value = headers.first(*names)
    if value is None:
        if required:
            raise MissingHeader(f"header {names[0]} is missing")
        return "sha256:" + hashlib.sha256(body).hexdigest()[:32]
    if not _DELIVERY_ID.fullmatch(value):
        raise BadHeader(f"{names[0]} must be 1-128 characters of [A-Za-z0-9._:-{{}}]")
    return value


def urls(obj: Obj | None, keys: Iterable[str]) -> list[str]:
    """The non-empty string values of `keys` in `obj` (absent or null keys are skipped)."""
    if obj is None:
        return []
    found: list[str] = []
    for key in keys:
        value = obj.opt_string(key)
        if value:
            found.append(value)
    return found


def require_urls(found: list[str], path: str) -> list[str]:
    if not found:
        raise InvalidPayload(f"{path} names no repository URL")
    return found


def dedupe(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def ref_update(
    *,
    forge: str,
    repo_urls: Iterable[str],
    ref: str,
    before: str,
    after: str,
    delivery: str,
    pusher: str | None,
    event: str,
    path: str,
    project: tuple[str, str] | None = None,
) -> RefUpdate:
    check_pair(before, after, path)
    return RefUpdate(
        forge=forge,
        repo_urls=dedupe(repo_urls),
        ref=ref,
        before=before,
        after=after,
        delivery_id=delivery,
        pusher=(pusher or "")[:256],
        event=event,
        project=project,
    )
