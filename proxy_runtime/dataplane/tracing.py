"""W3C traceparent and B3 propagation. Pure: randomness comes from the `rand` callable the
caller passes (random.getrandbits in production, a seeded one in tests)."""

from __future__ import annotations

import binascii
from collections.abc import Callable

Header = tuple[bytes, bytes]
TRACE_HEADERS = frozenset(
    {b"traceparent", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled", b"b3"}
)


_B3_SAMPLED = (b"x-b3-sampled", b"1")
_B3_NOT_SAMPLED = (b"x-b3-sampled", b"0")
_hexlify = binascii.b2a_hex


def _hex(value: int, width: int) -> bytes:
    return b"%0*x" % (width, value)


def _parse_traceparent(value: bytes) -> tuple[bytes, bytes, bool] | None:
    parts = value.strip().split(b"-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        int(parts[1], 16)
        int(parts[2], 16)
        flags = int(parts[3], 16)
    except ValueError:
        return None
    if parts[1] == b"0" * 32 or parts[2] == b"0" * 16:
        return None
    return parts[1].lower(), parts[2].lower(), bool(flags & 1)


_ZERO_SPAN = b"0000000000000000"


def has_trace(headers: list[Header]) -> bool:
    for name, _ in headers:  # noqa: SIM110 - a plain loop: any() with a generator costs more
        if name in TRACE_HEADERS:
            return True
    return False


def new_trace(sampling: float, rand: Callable[[int], int]) -> tuple[bytes, bytes]:
    """(trace headers in wire form, trace id) for a request that carries no trace: the same
    headers, ids and random draws as `propagate` on such a request, without building the
    header tuples the hot path would only serialize again."""
    ids = _hexlify(rand(192).to_bytes(24, "big"))
    trace_id = ids[:32]
    span_id = ids[32:]
    if span_id == _ZERO_SPAN:
        return new_trace(sampling, rand)
    sampled = sampling >= 1.0 or (sampling > 0.0 and rand(32) < sampling * 4294967296.0)
    flag = b"1" if sampled else b"0"
    return (b"traceparent: 00-%b-%b-0%b\r\nx-b3-traceid: %b\r\nx-b3-spanid: %b\r\nx-b3-sampled: %b\r\n"
            % (trace_id, span_id, flag, trace_id, span_id, flag), trace_id)


def propagate(
    headers: list[Header],
    sampling: float,
    rand: Callable[[int], int],
) -> tuple[list[Header], bytes, bool]:
    """Return (headers for the next hop, trace id, sampled).

    An incoming trace keeps its trace id and sampled decision; this hop gets a new span id and
    the incoming span becomes its parent. With no incoming trace a new one starts and is
    sampled with probability `sampling` (0..1). Without incoming trace headers the list is
    extended in place (the hot path); otherwise a new list is returned."""
    for name, _ in headers:
        if name in TRACE_HEADERS:
            break
    else:
        # one random draw for both ids (an all-zero id is invalid: 2^-64 odds, then redraw)
        ids = _hexlify(rand(192).to_bytes(24, "big"))
        trace_id = ids[:32]
        span_id = ids[32:]
        if span_id == b"0000000000000000":
            return propagate(headers, sampling, rand)
        sampled = sampling >= 1.0 or (sampling > 0.0 and rand(32) < sampling * 4294967296.0)
        if sampled:
            headers += ((b"traceparent", b"00-%b-%b-01" % (trace_id, span_id)),
                        (b"x-b3-traceid", trace_id), (b"x-b3-spanid", span_id), _B3_SAMPLED)
        else:
            headers += ((b"traceparent", b"00-%b-%b-00" % (trace_id, span_id)),
                        (b"x-b3-traceid", trace_id), (b"x-b3-spanid", span_id), _B3_NOT_SAMPLED)
        return headers, trace_id, sampled

    traceparent: bytes | None = None
    b3_trace = b3_span = b3_sampled = None
    rest: list[Header] = []
    for name, value in headers:
        if name in TRACE_HEADERS:
            if name == b"traceparent":
                traceparent = value
            elif name == b"x-b3-traceid":
                b3_trace = value
            elif name == b"x-b3-spanid":
                b3_span = value
            elif name == b"x-b3-sampled":
                b3_sampled = value
            # the single `b3` header and x-b3-parentspanid are rewritten below
            continue
        rest.append((name, value))

    parent_span: bytes | None = None
    parsed = _parse_traceparent(traceparent) if traceparent is not None else None
    if parsed is not None:
        trace_id, parent_span, sampled = parsed
    elif b3_trace and len(b3_trace) in (16, 32):
        trace_id = b3_trace.lower().rjust(32, b"0")
        parent_span = b3_span.lower() if b3_span else None
        sampled = b3_sampled in (b"1", b"true") if b3_sampled is not None else rand(32) < sampling * (1 << 32)
    else:
        trace_id = _hex(rand(128) or 1, 32)
        sampled = rand(32) < sampling * (1 << 32)
    span_id = _hex(rand(64) or 1, 16)
    flag = b"01" if sampled else b"00"
    rest.append((b"traceparent", b"00-" + trace_id + b"-" + span_id + b"-" + flag))
    rest.append((b"x-b3-traceid", trace_id))
    rest.append((b"x-b3-spanid", span_id))
    if parent_span:
        rest.append((b"x-b3-parentspanid", parent_span))
    rest.append((b"x-b3-sampled", b"1" if sampled else b"0"))
    return rest, trace_id, sampled
