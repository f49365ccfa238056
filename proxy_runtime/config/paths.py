"""Request-target normalization: what authorization and routing match on, and what the proxy
forwards. Pure; shared by the data plane and anything that decides on a concrete path.

Istio's normalization (docs: "Authorization Policy Normalization") at its MERGE_SLASHES
level, the one Istio recommends against CVE-2021-31920, applied in this order:

1. absolute-form (`http://host/p`) becomes origin-form (`/p`); the authority replaces Host
   (RFC 9112 3.2.2). Any other form (`*`, `host:port`, no leading `/`) is refused.
2. percent-decoding, once, of the unreserved characters (`A-Z a-z 0-9 - . _ ~`); other escapes
   are kept with upper-case hex. `%00` (NUL), `%2F` and `%5C` (an encoded `/` or `\\`) are
   refused, as is a `%` not followed by two hex digits.
3. `\\` becomes `/`.
4. RFC 3986 5.2.4 dot-segment removal (`/a/./b/../c` -> `/a/c`; never above the root).
5. runs of `/` merged into one.

A fragment (`#`), a control character or a space is refused. Characters RFC 3986 does not
allow in a path are percent-encoded (as UTF-8; lone surrogates from `surrogateescape` as
their byte). `;` is an ordinary character, as in Envoy: `/;/admin` stays `/;/admin`. The
query string is kept as received. The result is idempotent and never contains `//`, `/./`
or `/../`, nor ends in `/.` or `/..`."""

from __future__ import annotations

import re
import string

from proxy_runtime.errors import ProxyRuntimeError

__all__ = ["PathError", "normalize_path", "normalize_target"]


class PathError(ProxyRuntimeError, ValueError):
    """The request target cannot be normalized; the proxy answers 400."""


_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# kept as they are: unreserved, sub-delims, ":", "@" and "/" (RFC 3986 pchar and segments)
_KEEP = _UNRESERVED | frozenset("!$&'()*+,;=:@/")
_HEX = frozenset(string.hexdigits)
_SLASHES = re.compile(r"/{2,}")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def normalize_path(path: str) -> str:
    """The normalized form of an origin-form path (no query). Raises PathError."""
    if not path.startswith("/"):
        raise PathError("the path must start with '/'")
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        ch = path[i]
        if ch in _KEEP:
            out.append(ch)
        elif ch == "%":
            hx = path[i + 1:i + 3]
            if len(hx) != 2 or hx[0] not in _HEX or hx[1] not in _HEX:
                raise PathError("malformed percent-encoding in the path")
            value = int(hx, 16)
            if value == 0:
                raise PathError("encoded NUL (%00) in the path")
            if value in (0x2F, 0x5C):
                raise PathError("encoded '/' or '\\' (%2F, %5C) in the path")
            c = chr(value)
            out.append(c if c in _UNRESERVED else "%" + hx.upper())
            i += 3
            continue
        elif ch == "\\":
            out.append("/")
        elif ch == "#":
            raise PathError("fragment ('#') in the request target")
        elif ch <= " " or ch == "\x7f":
            raise PathError("control character or space in the path")
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
        i += 1
    return _SLASHES.sub("/", _remove_dot_segments("".join(out)))


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 for an absolute path (starts with '/')."""
    segments = path.split("/")[1:]
    last = len(segments) - 1
    out: list[str] = []
    for i, seg in enumerate(segments):
        if seg == "." or seg == "..":
            if seg == ".." and out:
                out.pop()
            if i == last:
                out.append("")  # "/a/." and "/a/b/.." end in a slash
            continue
        out.append(seg)
    return "/" + "/".join(out)


def normalize_target(target: str) -> tuple[str | None, str]:
    """(authority of an absolute-form target or None, the normalized path followed by the
    query as received). Raises PathError."""
    authority: str | None = None
    if not target.startswith("/"):
        m = _SCHEME.match(target)
        if m is None or m.group(0)[:-3].lower() not in ("http", "https"):
            raise PathError("the request target must be a path or an http(s) absolute URI")
        rest = target[m.end():]
        cut = min((k for k in (rest.find("/"), rest.find("?"), rest.find("#")) if k >= 0), default=len(rest))
        authority, target = rest[:cut], rest[cut:]
        if not authority or "@" in authority:
            raise PathError("absolute URI without a host, or with user information")
        if not target.startswith("/"):
            target = "/" + target
    q = target.find("?")
    if q < 0:
        return authority, normalize_path(target)
    query = target[q:]
    if "#" in query:
        raise PathError("fragment ('#') in the request target")
    return authority, normalize_path(target[:q]) + query
