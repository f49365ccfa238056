"""The HTTP shell: `POST /webhooks/{forge}` as a FastAPI router.

    router = make_router(settings, on_update=controller.refresh_soon, on_audit=audit.append)
    app.include_router(router)

Order of work for one delivery, cheapest refusal first:
 1. unknown forge -> 404; forge without a secret -> 403 (fail closed, body never read);
 2. Content-Length above the cap -> 413 before reading a byte;
 3. body streamed under a time limit (slow -> 408), counted as it arrives (over the cap ->
    413; never more than the cap is held);
 4. the adapter verifies the signature, then parses strictly (-> 401/400/415/422); the one
    delivery answered unverified is Bitbucket Data Center's unsigned "Test connection" ping;
 5. ping -> 200; an event we do not act on -> 200 `ignored`; delivery id already seen -> 200
    `duplicate`;
 6. not the watched repo / branch, tag push, branch deletion -> 200 `ignored`;
 7. otherwise `on_update(update)` and 202 `accepted`.

`on_update` is called on the event loop and must not block: the controller's `refresh()`
only records "something moved" and returns; its fetch loop coalesces bursts (many pushes ->
one or two fetches, newest commit wins). Every delivery, whatever its answer, produces one
`DeliveryRecord` for `on_audit`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from webhooks.adapters import ADAPTERS
from webhooks.decision import decide
from webhooks.dedup import RecentIds
from webhooks.errors import (
    BadRequest,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    NotConfigured,
    NotFoundRejection,
    Rejection,
)
from webhooks.headers import Headers, printable
from webhooks.model import (
    EVENT_NOT_HANDLED,
    UNSIGNED_PING,
    DeliveryRecord,
    Ignored,
    Ping,
    RefUpdate,
    Result,
)
from webhooks.settings import ReceiverSettings

log = logging.getLogger(__name__)

PATH = "/webhooks/{forge}"
# Above this size, verifying and parsing could hold the event loop for milliseconds.
THREAD_PARSE_BYTES = 256 * 1024
_DELIVERY_HEADERS = (
    "x-github-delivery",
    "idempotency-key",
    "x-gitlab-event-uuid",
    "x-forgejo-delivery",
    "x-gitea-delivery",
    "x-request-uuid",
    "x-request-id",
    "x-meshcd-delivery",
)

OnUpdate = Callable[[RefUpdate], None]
OnAudit = Callable[[DeliveryRecord], None]
Clock = Callable[[], float]


async def read_body(request: Request, cap: int, timeout_s: float) -> bytes:
    """The whole body, or BodyTooLarge / BodyTimeout / ClientGone. Holds at most `cap` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > cap:
            raise BodyTooLarge(f"body of {int(declared)} bytes is over the {cap} byte limit")
    chunks: list[bytes] = []
    size = 0
    receive = request.receive  # the raw ASGI channel: fewer layers than request.stream()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientGone("client went away before sending the whole body")
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > cap:
                    raise BodyTooLarge(f"body is over the {cap} byte limit")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyTimeout(f"body not received within {timeout_s:g} s") from None
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class _Delivery:
    forge: str
    delivery_id: str | None
    remote: str | None
    body_bytes: int


class _Receiver:
    def __init__(
        self, settings: ReceiverSettings, on_update: OnUpdate, on_audit: OnAudit, clock: Clock
    ) -> None:
        self.settings = settings
        self.on_update = on_update
        self.on_audit = on_audit
        self.clock = clock
        self.recent = RecentIds(settings.dedup_capacity)
        self.watched_key = settings.watched_key

    def _audit(self, record: DeliveryRecord) -> None:
        try:
            self.on_audit(record)
        except Exception:  # the answer to the forge must not depend on the audit sink
            log.exception("webhook audit callback failed for %s", record.delivery_id)

    def _answer(
        self,
        ctx: _Delivery,
        result: Result,
        reason: str,
        status: int,
        *,
        update: RefUpdate | None = None,
        detail: str | None = None,
        close: bool = False,
    ) -> Response:
        delivery_id = ctx.delivery_id
        self._audit(
            DeliveryRecord(
                time=self.clock(),
                forge=ctx.forge,
                delivery_id=delivery_id,
                result=result,
                reason=reason,
                status=status,
                remote_addr=ctx.remote,
                ref=update.ref if update else None,
                after=update.after if update else None,
                body_bytes=ctx.body_bytes,
            )
        )
        content: dict[str, object] = {"result": result, "reason": reason}
        if delivery_id is not None:
            content["delivery_id"] = delivery_id
        if detail:
            content["detail"] = detail
        if update is not None:
            content["ref"] = update.ref
            content["after"] = update.after
        # Closing after an early refusal means we never have to drain an unread body.
        headers = {"connection": "close"} if close else None
        return JSONResponse(content, status_code=status, headers=headers)

    async def handle(self, forge: str, request: Request) -> Response:
        remote = request.client.host if request.client else None
        body = b""
        body_read = False
        try:
            adapter = ADAPTERS.get(forge)
            if adapter is None:
                raise NotFoundRejection(f"no adapter for forge {printable(forge, 32)!r}")
            secret = self.settings.secrets.get(forge)
            if not secret:
                raise NotConfigured(f"no secret is configured for {forge}; refusing")
            body = await read_body(
                request, self.settings.max_body_bytes, self.settings.body_timeout_s
            )
            body_read = True
            headers = Headers(request.headers)
            if len(body) > THREAD_PARSE_BYTES:
                parsed = await run_in_threadpool(adapter, headers, body, secret)
            else:
                parsed = adapter(headers, body, secret)
        except Rejection as rejection:
            claimed = next(
                (request.headers[h] for h in _DELIVERY_HEADERS if h in request.headers), None
            )
            ctx = _Delivery(
                printable(forge, 32), printable(claimed) if claimed else None, remote, len(body)
            )
            return self._answer(
                ctx,
                "rejected",
                rejection.reason,
                rejection.status,
                detail=rejection.detail,
                close=not body_read,
            )
        ctx = _Delivery(forge, parsed.delivery_id, remote, len(body))
        if isinstance(parsed, Ping):
            if not parsed.signed:
                return self._answer(ctx, "ping", UNSIGNED_PING, 200, detail=parsed.event)
            return self._answer(ctx, "ping", parsed.event, 200)
        if isinstance(parsed, Ignored):
            return self._answer(ctx, "ignored", EVENT_NOT_HANDLED, 200, detail=parsed.event)
        key = f"{forge}:{parsed.delivery_id}"
        if self.recent.check_and_add(key):
            return self._answer(ctx, "duplicate", "delivery_already_seen", 200)
        decision = decide(
            parsed,
            self.watched_key,
            self.settings.watched_ref,
            fold_path_case=self.settings.fold_path_case,
        )
        if decision.result == "ignored" or decision.update is None:
            return self._answer(ctx, "ignored", decision.reason, 200, update=decision.update)
        try:
            self.on_update(decision.update)
        except Exception:
            log.exception("webhook on_update failed for %s", key)
            self.recent.forget(key)  # let the forge's retry through
            return self._answer(ctx, "error", "handoff_failed", 503, update=decision.update)
        return self._answer(ctx, "accepted", decision.reason, 202, update=decision.update)


def make_router(
    settings: ReceiverSettings,
    on_update: OnUpdate,
    on_audit: OnAudit,
    clock: Clock = time.time,
) -> APIRouter:
    """A router with `POST /webhooks/{forge}`; include it in any FastAPI app."""
    receiver = _Receiver(settings, on_update, on_audit, clock)
    router = APIRouter()

    async def receive_webhook(request: Request) -> Response:
        """Receive a forge webhook delivery."""
        return await receiver.handle(str(request.path_params["forge"]), request)

    # A plain Starlette route: the handler reads the raw body itself, so FastAPI's
    # parameter and body machinery would only add per-request cost.
    router.add_route(PATH, receive_webhook, methods=["POST"], include_in_schema=False)
    return router
