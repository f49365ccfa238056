"""The controller's JSON API (FastAPI), /metrics, /healthz and the webhook receiver.

Read endpoints are open (the API binds to 127.0.0.1 unless configured otherwise); every
mutating call needs the admin bearer token, and the audit names the token by its short id
(`admin-token:<id>`), never the secret. See docs/controller.md for the shapes.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from reconciler.audit import AuditRecord, RecordNotFound
from reconciler.ca import InvalidSpiffeId, issue_join_token
from reconciler.controller.datadir import token_id, token_matches
from reconciler.controller.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from reconciler.controller.service import Controller


def record_dict(r: AuditRecord) -> dict[str, Any]:
    return {"seq": r.seq, "time": r.time, "actor": r.actor, "kind": r.kind,
            "subject": r.subject, "data": r.data, "prevHash": r.prev_hash, "hash": r.hash}


def _instant(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"{name}: not an ISO-8601 time: {text[:40]!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class JoinTokenRequest(BaseModel):
    service: str = Field(min_length=1, max_length=63)
    namespace: str = Field(default="default", min_length=1, max_length=63)
    ttl_s: float = Field(default=3600.0, gt=0, le=7 * 86400)


def make_app(ctl: Controller) -> FastAPI:
    app = FastAPI(title="meshcd", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    api = APIRouter(prefix="/api")

    def admin(request: Request) -> str:
        """The acting token's audit name, or 401."""
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise HTTPException(401, "this call needs the admin bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        if not token_matches(presented.strip(), ctl.admin_token):
            raise HTTPException(401, "the bearer token is not valid",
                                headers={"WWW-Authenticate": "Bearer"})
        return f"admin-token:{token_id(ctl.admin_token)}"

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "epoch": ctl.epoch}

    # async: these read the fleet server's state, which lives on the event loop
    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await ctl.metrics_text(), media_type=CONTENT_TYPE)

    @api.get("/status")
    async def status() -> dict[str, Any]:
        return await ctl.status()

    @api.get("/proxies")
    async def proxies() -> dict[str, Any]:
        return {"proxies": ctl.proxies(), "counts": ctl.fleet_counts()}

    @api.get("/revisions")
    def revisions(limit: int = Query(50, ge=1, le=1000), before: int | None = None,
                  status: str | None = None) -> dict[str, Any]:
        revs = ctl.revisions.list(limit=limit, before_id=before, status=status)
        return {"revisions": [r.summary() for r in revs],
                "next": revs[-1].id if len(revs) == limit else None}

    @api.get("/revisions/{rev_id}")
    def revision(rev_id: int) -> dict[str, Any]:
        try:
            return ctl.revisions.get(rev_id).to_dict()
        except KeyError:
            raise HTTPException(404, f"no revision {rev_id}") from None

    @api.get("/audit")
    def audit_list(kind: str | None = None, actor: str | None = None,
                   subject: str | None = None, since: str | None = None,
                   until: str | None = None, before: int | None = Query(None, ge=1),
                   limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        records = ctl.audit.list(kind=kind, actor=actor, subject=subject,
                                 since=_instant(since, "since"), until=_instant(until, "until"),
                                 before_seq=before, limit=limit)
        return {"records": [record_dict(r) for r in records],
                "next": records[-1].seq if len(records) == limit else None}

    @api.get("/audit/verify")
    def audit_verify() -> dict[str, Any]:
        result = ctl.audit.verify()
        return {"ok": result.ok, "verifiedUpTo": result.verified_up_to,
                "brokenAt": result.broken_at, "reason": result.reason,
                "checked": result.checked,
                "head": None if result.head is None else {"seq": result.head.seq,
                                                          "hash": result.head.hash}}

    @api.get("/audit/export")
    def audit_export() -> PlainTextResponse:
        buf = io.StringIO()
        ctl.audit.export_jsonl(buf)
        return PlainTextResponse(buf.getvalue(), media_type="application/x-ndjson")

    @api.get("/audit/{seq}")
    def audit_get(seq: int) -> dict[str, Any]:
        try:
            return record_dict(ctl.audit.get(seq))
        except RecordNotFound:
            raise HTTPException(404, f"no audit record {seq}") from None

    @api.post("/refresh", status_code=202)
    def refresh(request: Request) -> dict[str, Any]:
        actor = admin(request)
        ctl.audit_now(actor, "manual.refresh", ctl.settings.branch, {})
        ctl.coordinator_refresh(f"manual:{actor}")
        return {"result": "accepted", "actor": actor}

    @api.post("/tokens/join", status_code=201)
    def join_token(body: JoinTokenRequest, request: Request) -> dict[str, Any]:
        actor = admin(request)
        try:
            issued = issue_join_token(ctl.tokens, ctl.audit, actor=actor, service=body.service,
                                      namespace=body.namespace, now=ctl.clock(),
                                      ttl=timedelta(seconds=body.ttl_s))
        except (InvalidSpiffeId, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        return {"token": issued.token, "tokenId": issued.id, "service": issued.service,
                "namespace": issued.namespace,
                "expiresAt": issued.expires_at.isoformat().replace("+00:00", "Z"),
                "caFingerprint": "sha256:" + ctl.ca.bundle_fingerprint(),
                "bootstrapUrl": ctl.bootstrap_url, "actor": actor}

    app.include_router(api)
    if ctl.webhook_router is not None:
        app.include_router(ctl.webhook_router)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    return app
