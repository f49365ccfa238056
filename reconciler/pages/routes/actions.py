"""Rollout actions (pause, resume, abort, promote, rollback): a confirmation page, then
the POST that acts through the read model and audits what it did (operator role)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from reconciler.auth.roles import Role
from reconciler.pages.actions import available_actions, describe, parse_action
from reconciler.pages.readmodel import Action
from reconciler.pages.routes.context import Pages


def add(router: APIRouter, pages: Pages) -> None:
    data, audit, need, render = pages.data, pages.audit, pages.need, pages.render

    @router.get("/actions/{name}")
    def confirm_action(request: Request, name: str) -> Response:
        session = need(request, Role.OPERATOR)
        action = parse_action(name)
        if action is None:
            raise HTTPException(404, "no such action")
        overview = data.overview()
        if action not in available_actions(overview):
            return render(
                request,
                "error.html",
                session,
                status=409,
                title="Not now",
                message=f"{action.value.title()} does not apply to the current state.",
            )
        targets = data.rollback_targets(limit=50) if action is Action.ROLLBACK else []
        return render(
            request,
            "confirm.html",
            session,
            action=action,
            description=describe(action),
            ov=overview,
            targets=targets,
        )

    @router.post("/actions/{name}")
    async def do_action(request: Request, name: str) -> Response:
        session, form = await pages.posted(request, Role.OPERATOR)
        action = parse_action(name)
        if action is None:
            raise HTTPException(404, "no such action")
        if form.get("confirm") != "yes":
            raise HTTPException(400, "the action was not confirmed")
        target: int | None = None
        if action is Action.ROLLBACK:
            raw = form.get("target", "")
            if not raw.isdigit():
                raise HTTPException(400, "choose the revision to roll back to")
            target = int(raw)
        actor = session.principal.actor
        reason = " ".join(form.get("reason", "").split())[:500]
        fast = action is Action.ROLLBACK and form.get("fast") == "yes"

        def run() -> Any:
            overview = data.overview()
            subject = f"revision {overview.rollout.revision_id}" if overview.rollout else ""
            if target is not None:
                subject = f"revision {target}"
            result = data.act(
                action, actor=actor, target_revision=target, reason=reason, fast=fast
            )
            audit.append(
                actor,
                f"action.{action.value}",
                subject,
                {
                    "ok": result.ok,
                    "message": result.message,
                    "target_revision": target,
                    "reason": reason,
                    "fast": fast,
                    "via": "page",
                    "role": session.principal.role.value,
                },
                now=pages.cfg.clock(),
            )
            return result

        result = await run_in_threadpool(run)
        if not result.ok:
            return render(
                request, "error.html", session, status=409, title="Not done", message=result.message
            )
        return RedirectResponse("/?" + urlencode({"done": result.message}), status_code=303)
