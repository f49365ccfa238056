"""Header names and values that would change the HTTP message they are put in (MCD131).

A header name must be an RFC 9110 token; a header value may hold visible characters, spaces and
horizontal tabs, never CR, LF, NUL or another control character. Without this check a Route's
`set: {x-probe: "a\\r\\nx-injected: 1"}` would reach the wire as two headers. The JSON Schemas
already give names a token pattern, but a JSON Schema `$` also matches before a final newline,
so names are checked here again, in full.

Checked: the names and values a Route rule adds or sets, the names it removes, the names of its
header matches, and the header a TrafficPolicy hashes on. Match values are not checked: a value
with CR or LF never matches a request, it changes nothing on the wire.
"""

from __future__ import annotations

import re
from functools import partial

from reconciler.language.checks.context import CheckContext
from reconciler.language.model import HeaderOps, LoadBalancer, Route, TrafficPolicy

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # HTAB (\x09) is allowed


def header_name_problem(name: str) -> str | None:
    """Why `name` is not an RFC 9110 token, or None when it is."""
    if _TOKEN.fullmatch(name):
        return None
    bad = next((c for c in name if not _TOKEN.fullmatch(c)), None)
    if bad is None:
        return "an empty header name"
    return f"header name {name!r} is not an RFC 9110 token (it contains {bad!r})"


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be a header value, or None when it can."""
    m = _BAD_VALUE_CHAR.search(value)
    if m is None:
        return None
    return (
        f"header value {value!r} contains the control character {m.group()!r} "
        "(CR or LF would start a new header on the wire)"
    )


def _check_ops(ctx: CheckContext, route: Route, path: tuple[str | int, ...], ops: HeaderOps) -> None:
    for op in ("add", "set"):
        for name, value in getattr(ops, op).items():
            problem = header_name_problem(name)
            if problem is not None:
                ctx.add("MCD131", problem, ctx.at(route, *path, op, name))
            problem = header_value_problem(value)
            if problem is not None:
                loc = route.value_loc(("spec", *path, op, name))
                ctx.add("MCD131", f"{name}: {problem}", loc)
    for k, name in enumerate(ops.remove):
        problem = header_name_problem(name)
        if problem is not None:
            ctx.add("MCD131", problem, route.value_loc(("spec", *path, "remove", k)))


def _check_route(ctx: CheckContext, route: Route) -> None:
    for i, rule in enumerate(route.rules):
        for j, m in enumerate(rule.matches):
            for k, h in enumerate(m.headers):
                problem = header_name_problem(h.name)
                if problem is not None:
                    loc = route.value_loc(("spec", "rules", i, "matches", j, "headers", k, "name"))
                    ctx.add("MCD131", problem, loc)
        if rule.headers is not None:
            for side in ("request", "response"):
                ops: HeaderOps = getattr(rule.headers, side)
                _check_ops(ctx, route, ("rules", i, "headers", side), ops)


def _check_hash(
    ctx: CheckContext, tp: TrafficPolicy, path: tuple[str | int, ...], lb: LoadBalancer | None
) -> None:
    if lb is None or lb.hash_on is None or lb.hash_on.header is None:
        return
    problem = header_name_problem(lb.hash_on.header)
    if problem is not None:
        loc = tp.value_loc(("spec", *path, "loadBalancer", "hashOn", "header"))
        ctx.add("MCD131", problem, loc)


def _check_traffic(ctx: CheckContext, tp: TrafficPolicy) -> None:
    _check_hash(ctx, tp, (), tp.load_balancer)
    for i, sp in enumerate(tp.subsets):
        _check_hash(ctx, tp, ("subsets", i), sp.load_balancer)


def check(ctx: CheckContext) -> None:
    for route in ctx.model.routes:
        ctx.local(route, partial(_check_route, ctx, route), tag="headers")
    for tp in ctx.model.traffic_policies:
        ctx.local(tp, partial(_check_traffic, ctx, tp), tag="headers")
