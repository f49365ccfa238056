"""Small compiled matchers shared by the authorization evaluator and the route matcher."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from .errors import SnapshotError

StrPred = Callable[[str], bool]


@lru_cache(maxsize=1)
def _re2_module() -> tuple[Any, Any]:
    # Imported on the first regex, not at start: RE2 costs a proxy ~2.7 MB of RSS, and most
    # configs match by prefix and exact values only.
    import re2

    options = re2.Options()
    options.log_errors = False  # errors are reported as SnapshotError, not on stderr
    return re2, options


@lru_cache(maxsize=8192)  # routes repeat the same few regexes; compiled RE2 objects are immutable
def _re2(pattern: str) -> Any:
    re2, options = _re2_module()
    return re2.compile(pattern, options=options)


# Envoy refuses a regex whose RE2 program is bigger (its default `re2.max_program_size`), so
# the proxy does too: a snapshot gets the same verdict on either data plane.
MAX_PROGRAM_SIZE = 100


def compile_regex(pattern: str, path: str) -> Any:  # re2 ships no type hints
    """RE2 regex, or SnapshotError carrying RE2's message (`missing )`), or saying the program
    is over MAX_PROGRAM_SIZE."""
    re2, _ = _re2_module()
    try:
        compiled = _re2(pattern)
    except re2.error as e:
        raw = e.args[0] if e.args else "invalid regex"
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        # RE2 says "missing ): a(b"; keep the reason, the pattern is in the snapshot.
        reason = text.rsplit(": ", 1)[0] if text.endswith(pattern) else text
        raise SnapshotError(path, reason) from None
    size = int(compiled.programsize)
    if size > MAX_PROGRAM_SIZE:
        raise SnapshotError(path, f"RE2 program size {size} is over {MAX_PROGRAM_SIZE} "
                                  "(Envoy's limit): simplify the regex")
    return compiled


def _never(_: str) -> bool:
    return False


def _non_empty(v: str) -> bool:
    return v != ""


def istio_string_matcher(patterns: Sequence[str], lower: bool = False) -> StrPred:
    """Istio string matching: `abc` exact, `abc*` prefix, `*abc` suffix, `*` any non-empty.

    Returns a predicate true when the value matches one of the patterns. `lower` folds the
    patterns to lower case (the caller folds the value).
    """
    if not patterns:
        return _never
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    for raw in patterns:
        p = raw.lower() if lower else raw
        if p == "*":
            return _non_empty
        if p.startswith("*"):  # checked before the prefix form, as Istio does: `*a*` = suffix "a*"
            suffixes.append(p[1:])
        elif p.endswith("*"):
            prefixes.append(p[:-1])
        else:
            exact.add(p)
    ex = frozenset(exact)
    pre = tuple(prefixes)
    suf = tuple(suffixes)
    if pre and suf:
        return lambda v: v in ex or v.startswith(pre) or v.endswith(suf)
    if pre:
        return lambda v: v in ex or v.startswith(pre)
    if suf:
        return lambda v: v in ex or v.endswith(suf)
    return ex.__contains__


# --- IPs ------------------------------------------------------------------------------------

IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr(text: str, path: str) -> IpNet:
    """A CIDR or a plain IP (a /32 or /128). Host bits set are accepted, as Istio does."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise SnapshotError(path, f"{text!r} is not a CIDR or IP address") from None


@lru_cache(maxsize=4096)
def _ip_key(ip: str) -> tuple[int, int] | None:
    """(version, integer) of an address, cached: requests repeat the same few peers."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 (dual-stack sockets)
    return addr.version, int(addr)


IpPred = Callable[[str | None], bool]


def ip_matcher(nets: Sequence[IpNet]) -> IpPred:
    """True when the address is inside one of the networks; an absent/invalid address never is."""
    ranges = tuple((n.version, int(n.network_address), int(n.netmask)) for n in nets)

    def match(ip: str | None) -> bool:
        if not ip:
            return False
        key = _ip_key(ip)
        if key is None:
            return False
        version, value = key
        for v, net, mask in ranges:  # noqa: SIM110 - a plain loop is faster than any()
            if v == version and value & mask == net:
                return True
        return False

    return match
