"""The fleet protocol's wire messages: one JSON object per WebSocket text frame.

Both the controller (reconciler.fleet) and the proxy's agent import this module, so the two
can never disagree about a field. Pure: text in, typed messages out (and back). Parsing is
strict: an unknown type, a missing or extra field, a wrong type or an oversized frame raises
`ProtocolError` (permanent: the peer sent something this version will never accept).
See docs/fleet.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy_runtime.errors import ProxyRuntimeError

SUBPROTOCOL = "meshcd.fleet.v1"
FLEET_PATH = "/fleet"
# Snapshots can be large (a proxy calling many services); everything a proxy sends is small.
MAX_TO_PROXY_BYTES = 16 * 1024 * 1024
MAX_TO_CONTROLLER_BYTES = 1024 * 1024
MAX_STATS_WINDOWS = 120
MAX_TEXT = 64 * 1024  # any single string field other than config/PEMs/errors
MAX_LABELS = 64


class ProtocolError(ProxyRuntimeError, ValueError):
    """A frame that is not a valid message of this protocol. Permanent."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed audit checkpoint (docs/audit.md, "Anchors"): the controller's audit chain
    had record `seq` with hash `hash` at `time`. The proxy keeps the newest few and reports
    its newest in its hello; it never interprets them (the controller checks the signature)."""

    seq: int
    hash: str
    time: str
    key_id: str
    signature: str
    type: Literal["checkpoint"] = "checkpoint"


@dataclass(frozen=True, slots=True)
class Hello:
    proxy_id: str
    service: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    running_version: str | None = None
    # The newest audit checkpoint this proxy holds. `anchoring` says the agent understands
    # checkpoint messages: it is True exactly when the hello carries a `checkpoint` field
    # (null or an object); the controller sends checkpoints only to such agents, so agents
    # from before checkpoints never receive a message type they do not know.
    checkpoint: Checkpoint | None = None
    anchoring: bool = False
    type: Literal["hello"] = "hello"


@dataclass(frozen=True, slots=True)
class Snapshot:
    nonce: str
    epoch: int
    version: str
    revision: str
    config: dict[str, Any]
    type: Literal["snapshot"] = "snapshot"


@dataclass(frozen=True, slots=True)
class Ack:
    nonce: str
    version: str
    type: Literal["ack"] = "ack"


@dataclass(frozen=True, slots=True)
class Nack:
    nonce: str
    version: str
    error: str
    type: Literal["nack"] = "nack"


@dataclass(frozen=True, slots=True)
class Stats:
    windows: list[dict[str, Any]]
    type: Literal["stats"] = "stats"


@dataclass(frozen=True, slots=True)
class Csr:
    csr_pem: str
    type: Literal["csr"] = "csr"


@dataclass(frozen=True, slots=True)
class Certificate:
    chain_pem: str
    trust_bundle_pem: str
    type: Literal["certificate"] = "certificate"


@dataclass(frozen=True, slots=True)
class Error:
    reason: str
    type: Literal["error"] = "error"


ToController = Hello | Ack | Nack | Stats | Csr
ToProxy = Snapshot | Certificate | Error | Checkpoint
Message = ToController | ToProxy

# wire name of each field, per type (order = the dataclass's positional order)
_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "hello": (
        ("proxy_id", "proxyId"),
        ("service", "service"),
        ("namespace", "namespace"),
        ("labels", "labels"),
        ("running_version", "runningVersion"),
        ("checkpoint", "checkpoint"),
    ),
    "snapshot": (
        ("nonce", "nonce"),
        ("epoch", "epoch"),
        ("version", "version"),
        ("revision", "revision"),
        ("config", "config"),
    ),
    "ack": (("nonce", "nonce"), ("version", "version")),
    "nack": (("nonce", "nonce"), ("version", "version"), ("error", "error")),
    "stats": (("windows", "windows"),),
    "csr": (("csr_pem", "csrPem"),),
    "certificate": (("chain_pem", "chainPem"), ("trust_bundle_pem", "trustBundlePem")),
    "error": (("reason", "reason"),),
    "checkpoint": (
        ("seq", "seq"),
        ("hash", "hash"),
        ("time", "time"),
        ("key_id", "keyId"),
        ("signature", "signature"),
    ),
}
_TO_CONTROLLER = frozenset({"hello", "ack", "nack", "stats", "csr"})
_TO_PROXY = frozenset({"snapshot", "certificate", "error", "checkpoint"})


def encode(message: Message) -> str:
    """The JSON text of a message (compact; keys in protocol order)."""
    doc: dict[str, Any] = {"type": message.type}
    for attr, wire in _FIELDS[message.type]:
        if wire == "checkpoint":
            if isinstance(message, Hello) and message.anchoring:
                cp = message.checkpoint
                doc[wire] = None if cp is None else _checkpoint_doc(cp)
            continue
        doc[wire] = getattr(message, attr)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _checkpoint_doc(cp: Checkpoint) -> dict[str, Any]:
    return {wire: getattr(cp, attr) for attr, wire in _FIELDS["checkpoint"]}


def encode_snapshot(
    nonce: str, epoch: int, version: str, revision: str, config_json: bytes
) -> bytes:
    """A snapshot frame (UTF-8) around already-serialised config JSON, without parsing it
    again: the controller sends the same rendered bytes to many proxies."""
    head = json.dumps(
        {
            "type": "snapshot",
            "nonce": nonce,
            "epoch": epoch,
            "version": version,
            "revision": revision,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return head[:-1].encode("utf-8") + b',"config":' + config_json + b"}"


def decode_to_controller(frame: str | bytes) -> ToController:
    """Parse a frame a proxy sent. Raises `ProtocolError`."""
    msg = _decode(frame, MAX_TO_CONTROLLER_BYTES, _TO_CONTROLLER)
    assert isinstance(msg, Hello | Ack | Nack | Stats | Csr)
    return msg


def decode_to_proxy(frame: str | bytes) -> ToProxy:
    """Parse a frame the controller sent. Raises `ProtocolError`."""
    msg = _decode(frame, MAX_TO_PROXY_BYTES, _TO_PROXY)
    assert isinstance(msg, Snapshot | Certificate | Error | Checkpoint)
    return msg


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not valid JSON")


def _decode(frame: str | bytes, limit: int, allowed: frozenset[str]) -> Message:
    size = (
        len(frame.encode("utf-8"))
        if isinstance(frame, str) and len(frame) * 4 > limit
        else len(frame)
    )
    if size > limit:
        raise ProtocolError(f"frame of {size} bytes is over the limit of {limit}")
    try:
        doc = json.loads(frame, parse_constant=_reject_constant)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        raise ProtocolError(f"unexpected message type {kind!r} (expected one of {sorted(allowed)})")
    spec = _FIELDS[kind]
    wire_names = {wire for _, wire in spec}
    extra = sorted(set(doc) - wire_names - {"type"})
    if extra:
        raise ProtocolError(f"{kind}: unknown field(s) {', '.join(extra)}")
    values: dict[str, Any] = {}
    for attr, wire in spec:
        if wire not in doc:
            if (kind, wire) in _OPTIONAL:
                continue
            raise ProtocolError(f"{kind}: missing field {wire}")
        values[attr] = _check(kind, wire, doc[wire])
    if kind == "hello":
        values["anchoring"] = "checkpoint" in doc
    built: Message = _BUILD[kind](**values)
    return built


_OPTIONAL = frozenset({("hello", "labels"), ("hello", "runningVersion"),
                       ("hello", "checkpoint")})
_HEX = frozenset("0123456789abcdef")


def _checkpoint(kind: str, value: Any) -> Checkpoint:
    """A checkpoint's shape (its signature is the controller's to check)."""
    if not isinstance(value, dict):
        raise ProtocolError(f"{kind}.checkpoint must be an object or null")
    names = {wire for _, wire in _FIELDS["checkpoint"]}
    if set(value) != names:
        raise ProtocolError(f"{kind}.checkpoint must have exactly the fields "
                            f"{', '.join(sorted(names))}")
    return Checkpoint(**{attr: _check("checkpoint", wire, value[wire])
                         for attr, wire in _FIELDS["checkpoint"]})


def _text(kind: str, wire: str, value: Any, limit: int = MAX_TEXT, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{kind}.{wire} must be a string")
    if not value and not empty:
        raise ProtocolError(f"{kind}.{wire} must not be empty")
    if len(value) > limit:
        raise ProtocolError(f"{kind}.{wire} is longer than {limit} characters")
    return value


def _check(kind: str, wire: str, value: Any) -> Any:
    if wire == "labels":
        if not isinstance(value, dict) or len(value) > MAX_LABELS:
            raise ProtocolError(f"{kind}.labels must be an object of at most {MAX_LABELS} strings")
        for k, v in value.items():
            _text(kind, "labels key", k, 253)
            _text(kind, f"labels[{k}]", v, 1024, empty=True)
        return dict(value)
    if wire == "checkpoint":
        return None if value is None else _checkpoint(kind, value)
    if kind == "checkpoint" and wire == "seq":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ProtocolError(f"{kind}.seq must be a positive integer")
        return value
    if kind == "checkpoint" and wire == "hash":
        if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX:
            raise ProtocolError(f"{kind}.hash must be 64 lowercase hex digits")
        return value
    if kind == "checkpoint" and wire in ("time", "keyId"):
        return _text(kind, wire, value, 64)
    if kind == "checkpoint" and wire == "signature":
        return _text(kind, wire, value, 256)
    if wire == "runningVersion":
        return None if value is None else _text(kind, wire, value, 128)
    if wire == "epoch":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProtocolError(f"{kind}.epoch must be a non-negative integer")
        return value
    if wire == "config":
        if not isinstance(value, dict):
            raise ProtocolError(f"{kind}.config must be an object")
        return value
    if wire == "windows":
        if not isinstance(value, list) or len(value) > MAX_STATS_WINDOWS:
            raise ProtocolError(f"{kind}.windows must be a list of at most {MAX_STATS_WINDOWS}")
        for w in value:
            if not isinstance(w, dict) or not isinstance(w.get("second"), int):
                raise ProtocolError(
                    f"{kind}.windows[]: each window is an object with an integer 'second'"
                )
        return list(value)
    if wire in ("csrPem", "chainPem", "trustBundlePem"):
        return _text(kind, wire, value, 256 * 1024)
    if wire in ("error", "reason"):
        return _text(kind, wire, value, 16 * 1024)
    if wire == "revision":
        return _text(kind, wire, value, 256, empty=True)
    return _text(kind, wire, value, 253 if wire in ("proxyId", "service", "namespace") else 256)


_BUILD: dict[str, Any] = {
    "hello": Hello,
    "snapshot": Snapshot,
    "ack": Ack,
    "nack": Nack,
    "stats": Stats,
    "csr": Csr,
    "certificate": Certificate,
    "error": Error,
    "checkpoint": Checkpoint,
}
