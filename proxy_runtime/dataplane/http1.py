"""HTTP/1.1 wire helpers shared by both sides of the proxy: status lines, hop-by-hop
headers, head serialization and the proxy's own small responses."""

from __future__ import annotations

from http import HTTPStatus

Header = tuple[bytes, bytes]

# Connection-scoped headers: never forwarded (RFC 9110 7.6.1). Framing headers are rebuilt.
HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
        b"trailer", b"upgrade", b"proxy-authorization", b"proxy-authenticate", b"expect",
        b"content-length",
    }
)

STATUS_LINES: dict[int, bytes] = {}
for _s in HTTPStatus:
    STATUS_LINES[int(_s)] = b"HTTP/1.1 %d %s\r\n" % (int(_s), _s.phrase.encode())


def status_line(status: int, reason: bytes | None = None) -> bytes:
    line = STATUS_LINES.get(status)
    if line is not None and reason is None:
        return line
    return b"HTTP/1.1 %d %s\r\n" % (status, reason or b"Unknown")


def simple_response(
    status: int,
    body: bytes,
    *,
    close: bool = False,
    extra: list[Header] | None = None,
    content_type: bytes = b"text/plain",
) -> bytes:
    """A complete response the proxy itself answers with (errors, denials, admin)."""
    parts = [status_line(status), b"content-type: ", content_type, b"\r\ncontent-length: ",
             str(len(body)).encode(), b"\r\n"]
    if extra:
        for name, value in extra:
            parts += [name, b": ", value, b"\r\n"]
    if close:
        parts.append(b"connection: close\r\n")
    parts += [b"\r\n", body]
    return b"".join(parts)


def final_coding_is_chunked(value: bytes) -> bool:
    """Whether a Transfer-Encoding field line's last coding is `chunked` (token list, any
    case, optional whitespace), which is what frames a response body (RFC 9112 6.3)."""
    return value.rsplit(b",", 1)[-1].strip(b" \t").lower() == b"chunked"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
