"""Every way a delivery can be refused, as one exception hierarchy.

Each `Rejection` carries the HTTP status the receiver answers with, a stable machine-readable
`reason` code (goes into the JSON answer and the audit) and `temporary`: whether sending the
very same request again may get another answer (the spelling of `reconciler.errors.MeshcdError`
and `proxy_runtime.errors.ProxyRuntimeError`; `webhooks` may import neither). Catch
`Rejection` to handle them all.

    Rejection
    ├── NotFoundRejection        404  unknown_forge
    ├── NotConfigured            403  forge_not_configured        (fail closed; temporary)
    ├── AuthenticationFailed     401
    │   ├── MissingSignature          missing_signature
    │   ├── UnsupportedAlgorithm      unsupported_signature_algorithm  (e.g. sha1=)
    │   └── BadSignature              bad_signature
    ├── BadRequest               400
    │   ├── MissingHeader             missing_header
    │   ├── AmbiguousHeader           ambiguous_header
    │   ├── BadHeader                 bad_header  (e.g. an unusable delivery id)
    │   ├── ClientGone                client_disconnected  (temporary)
    │   └── InvalidJson               invalid_json
    ├── UnsupportedMediaType     415  unsupported_media_type
    ├── InvalidPayload           422  invalid_payload
    ├── BodyTooLarge             413  body_too_large
    └── BodyTimeout              408  body_timeout                 (temporary)
"""

from __future__ import annotations

from typing import ClassVar


class Rejection(Exception):
    """Base of every refusal. `detail` is for humans; `reason` is the stable code."""

    status: int = 400
    reason: str = "rejected"
    temporary: ClassVar[bool] = False

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason

    def as_json(self) -> dict[str, object]:
        return {"result": "rejected", "reason": self.reason, "detail": self.detail}


class NotFoundRejection(Rejection):
    status = 404
    reason = "unknown_forge"


class NotConfigured(Rejection):
    """The forge has no secret configured: the receiver refuses everything for it."""

    status = 403
    reason = "forge_not_configured"
    temporary = True  # an operator can add the secret


class AuthenticationFailed(Rejection):
    status = 401
    reason = "authentication_failed"


class MissingSignature(AuthenticationFailed):
    reason = "missing_signature"


class UnsupportedAlgorithm(AuthenticationFailed):
    reason = "unsupported_signature_algorithm"


class BadSignature(AuthenticationFailed):
    reason = "bad_signature"


class BadRequest(Rejection):
    status = 400
    reason = "bad_request"


class MissingHeader(BadRequest):
    reason = "missing_header"


class AmbiguousHeader(BadRequest):
    reason = "ambiguous_header"


class BadHeader(BadRequest):
    reason = "bad_header"


class ClientGone(BadRequest):
    reason = "client_disconnected"
    temporary = True


class InvalidJson(BadRequest):
    reason = "invalid_json"


class UnsupportedMediaType(Rejection):
    status = 415
    reason = "unsupported_media_type"


class InvalidPayload(Rejection):
    """Well-formed JSON that does not follow the forge's schema (missing field, wrong type,
    a ref or sha of the wrong shape)."""

    status = 422
    reason = "invalid_payload"


class BodyTooLarge(Rejection):
    status = 413
    reason = "body_too_large"


class BodyTimeout(Rejection):
    status = 408
    reason = "body_timeout"
    temporary = True
