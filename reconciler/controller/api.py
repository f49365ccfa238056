"""The controller's JSON API (FastAPI), /metrics, /healthz and the webhook receiver.

Every /api call needs a role token (`Authorization: Bearer <token>`, `meshcd token create`):
reads need the viewer role, rollout and rollback actions and refreshes the operator role,
join tokens the admin role. The first-start admin token (data dir `admin.token`) is the
first admin. The audit names the acting token (`token:<name>#<id>`), never the secret.
/healthz and /metrics stay open (probes and Prometheus). See docs/controller.md.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from reconciler.audit import AuditLog, AuditRecord, RecordNotFound
from reconciler.auth.deps import require
from reconciler.auth.roles import Principal, Role
from reconciler.ca import InvalidSpiffeId, JoinTokens, issue_join_token
from reconciler.controller.anchoring import AuditAnchoring
from reconciler.controller.commands import Commands
from reconciler.controller.http_errors import install_error_handlers
from reconciler.controller.metrics import CONTENT_TYPE
from reconciler.controller.view import ControllerView
from reconciler.errors import NotFound
from reconciler.rollout import OPERATOR_ACTIONS
from reconciler.store.integrity import check_integrity


class ApiHost(Protocol):
    """What the API needs of the running controller: the read model, the operators'
    commands, the audit log and join tokens, and a few facts."""

    @property
    def view(self) -> ControllerView: ...
    @property
    def commands(self) -> Commands: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def tokens(self) -> JoinTokens: ...
    @property
    def bootstrap_url(self) -> str: ...
    @property
    def webhook_router(self) -> Any: ...
    def now(self) -> datetime: ...
    def ca_fingerprint(self) -> str: ...
    def health_problems(self) -> list[str]: ...
    @property
    def anchoring(self) -> AuditAnchoring: ...
    def refresh(self, actor: str) -> None: ...
    async def metrics_text(self) -> bytes: ...


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


OperatorPrincipal = Annotated[Principal, Depends(require(Role.OPERATOR))]
AdminPrincipal = Annotated[Principal, Depends(require(Role.ADMIN))]


class ActionRequest(BaseModel):
    reason: str = Field(default="", max_length=500)


class RollbackRequest(BaseModel):
    to: int | None = Field(default=None, ge=1)
    fast: bool = False
    revert: bool = False
    reason: str = Field(default="", max_length=500)


def make_app(ctl: ApiHost) -> FastAPI:
    app = FastAPI(title="meshcd", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    install_error_handlers(app)
    viewer = [Depends(require(Role.VIEWER))]
    api = APIRouter(prefix="/api")
    read = APIRouter(prefix="/api", dependencies=viewer)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        problems = ctl.health_problems()
        return {"ok": not problems, "status": "degraded" if problems else "ok",
                "problems": problems, "epoch": ctl.view.identity.epoch}

    # async: these read the fleet server's state, which lives on the event loop
    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await ctl.metrics_text(), media_type=CONTENT_TYPE)

    @read.get("/status")
    async def status() -> dict[str, Any]:
        return await ctl.view.status()

    @read.get("/proxies")
    async def proxies() -> dict[str, Any]:
        return ctl.view.proxies()

    @read.get("/revisions")
    def revisions(limit: int = Query(50, ge=1, le=1000), before: int | None = None,
                  status: str | None = None) -> dict[str, Any]:
        revs = ctl.view.revisions(limit=limit, before_id=before, status=status)
        return {"revisions": [r.summary() for r in revs],
                "next": revs[-1].id if len(revs) == limit else None}

    @read.get("/revisions/{rev_id}")
    def revision(rev_id: int) -> dict[str, Any]:
        try:
            return ctl.view.revision(rev_id).to_dict()
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None

    @read.get("/audit")
    def audit_list(kind: str | None = None, actor: str | None = None,
                   subject: str | None = None, since: str | None = None,
                   until: str | None = None, before: int | None = Query(None, ge=1),
                   limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        records = ctl.audit.list(kind=kind, actor=actor, subject=subject,
                                 since=_instant(since, "since"), until=_instant(until, "until"),
                                 before_seq=before, limit=limit)
        return {"records": [record_dict(r) for r in records],
                "next": records[-1].seq if len(records) == limit else None}

    @read.get("/audit/verify")
    def audit_verify() -> dict[str, Any]:
        result = ctl.audit.verify()
        integrity = check_integrity(ctl.audit.engine)  # damaged pages the chain never reads
        return {"ok": result.ok and integrity.ok, "integrity": integrity.to_dict(),
                "chainOk": result.ok, "verifiedUpTo": result.verified_up_to,
                "brokenAt": result.broken_at, "reason": result.reason,
                "checked": result.checked,
                "head": None if result.head is None else {"seq": result.head.seq,
                                                          "hash": result.head.hash},
                "anchor": ctl.anchoring.report(result).to_dict()}

    @read.get("/audit/export")
    def audit_export() -> PlainTextResponse:
        buf = io.StringIO()
        ctl.audit.export_jsonl(buf)
        return PlainTextResponse(buf.getvalue(), media_type="application/x-ndjson")

    @read.get("/audit/{seq}")
    def audit_get(seq: int) -> dict[str, Any]:
        try:
            return record_dict(ctl.audit.get(seq))
        except RecordNotFound:
            raise HTTPException(404, f"no audit record {seq}") from None

    @read.get("/rollout")
    async def rollout() -> dict[str, Any]:
        return {"rollout": ctl.view.rollout(), "pin": ctl.view.pin()}

    @read.get("/revisions/{rev_id}/rollout")
    async def revision_rollout(rev_id: int) -> dict[str, Any]:
        view = ctl.view
        live = view.rollout()
        if live is not None and live.get("revisionId") == rev_id:
            return live
        saved = await asyncio.to_thread(view.revision_rollout, rev_id,
                                        running=view.rolling_out())
        if saved is None:
            raise HTTPException(404, f"revision {rev_id} had no canary rollout")
        return saved

    @api.post("/rollout/{action}")
    async def rollout_action(action: str, who: OperatorPrincipal,
                             body: ActionRequest | None = None) -> dict[str, Any]:
        if action not in OPERATOR_ACTIONS:
            raise HTTPException(404, f"unknown rollout action {action!r} "
                                f"(one of {', '.join(OPERATOR_ACTIONS)})")
        accepted, message = await ctl.commands.rollout_action(action, who.actor,
                                                              body.reason if body else "")
        if not accepted:
            raise HTTPException(409, message)
        return {"accepted": True, "message": message, "actor": who.actor}

    @api.post("/rollback", status_code=202)
    async def rollback(body: RollbackRequest,
                       who: OperatorPrincipal) -> dict[str, Any]:
        return await ctl.commands.rollback(body.to, fast=body.fast, revert=body.revert,
                                           actor=who.actor, reason=body.reason)

    @api.post("/refresh", status_code=202)
    def refresh(who: OperatorPrincipal) -> dict[str, Any]:
        ctl.refresh(who.actor)
        return {"result": "accepted", "actor": who.actor}

    @api.post("/tokens/join", status_code=201)
    def join_token(body: JoinTokenRequest,
                   who: AdminPrincipal) -> dict[str, Any]:
        actor = who.actor
        try:
            issued = issue_join_token(ctl.tokens, ctl.audit, actor=actor, service=body.service,
                                      namespace=body.namespace, now=ctl.now(),
                                      ttl=timedelta(seconds=body.ttl_s))
        except (InvalidSpiffeId, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        return {"token": issued.token, "tokenId": issued.id, "service": issued.service,
                "namespace": issued.namespace,
                "expiresAt": issued.expires_at.isoformat().replace("+00:00", "Z"),
                "caFingerprint": "sha256:" + ctl.ca_fingerprint(),
                "bootstrapUrl": ctl.bootstrap_url, "actor": actor}

    app.include_router(read)
    app.include_router(api)
    if ctl.webhook_router is not None:
        app.include_router(ctl.webhook_router)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    return app
