"""The one place that turns the controller's errors into HTTP answers.

Handlers raise domain errors (`reconciler.errors`); they never pick a status themselves.
`install_error_handlers(app)` maps them, first match wins:

    NotFound                 404
    Conflict                 409   (RollbackRefused, ...)
    ConfigError              400   (bad settings or input; the message says what to change)
    any other, temporary     503   with Retry-After (the store is busy, the remote is down)
    any other MeshcdError    500

The body is the API's error shape, `{"error": "<message>"}`, the same as an HTTPException's,
plus `"temporary": true` when retrying may help (a full disk or a locked database: nothing was
written).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from reconciler.errors import ConfigError, Conflict, MeshcdError, NotFound

RETRY_AFTER_S = 5

# Checked in order: an error that is both (RollbackTargetNotFound) gets the first.
_STATUS: tuple[tuple[type[MeshcdError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (ConfigError, 400),
)


def status_for(exc: MeshcdError) -> int:
    """The HTTP status `exc` is answered with."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 503 if exc.temporary else 500


def error_response(exc: MeshcdError) -> JSONResponse:
    status = status_for(exc)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    body: dict[str, object] = {"error": str(exc) or type(exc).__name__}
    if exc.temporary:
        body["temporary"] = True
    return JSONResponse(body, status_code=status, headers=headers)


async def _handle(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MeshcdError)  # registered for MeshcdError only
    return error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every `MeshcdError` a route raises with its status (see the module docstring)."""
    app.add_exception_handler(MeshcdError, _handle)
