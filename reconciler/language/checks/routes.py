"""Route checks: references (MCD101-103), weights (MCD104), one Route per host (MCD106),
unreachable rules (MCD107), regexes (MCD108/109), retry budgets (MCD110), retries on
non-idempotent methods (MCD111), and a host with no http port (MCD130).

MCD111 fires only when a rule with retries explicitly matches POST or PATCH. A rule with no
method restriction (a catch-all) is not flagged: that is how most routes are written, and the
retry is still on the idempotent traffic it carries; flagging every such rule would bury the
one that matters. The fix is a separate rule for the writes without `retries`.
"""

from __future__ import annotations

from functools import partial

from reconciler.language.checks.context import CheckContext, where
from reconciler.language.checks.regex_safety import regex_problem
from reconciler.language.model import Match, Route, RouteRule, ServiceRef

NON_IDEMPOTENT = ("POST", "PATCH")
_EPSILON = 1e-9  # durations are float seconds; 0.1 * 3 must not be "shorter" than 0.3


def check_reference(
    ctx: CheckContext,
    route: Route,
    path: tuple[str | int, ...],
    ref: ServiceRef,
    subset: str | None,
    port: int | None,
) -> None:
    """MCD101/102/103 for a destination-like block (destination, mirror) at `spec.<path>`."""
    key = (ref.namespace, ref.name)
    ports = ctx.port_numbers.get(key)
    if ports is None:
        ctx.add("MCD101", f"unknown service {ref}", ctx.at(route, *path, "service"))
        return
    if subset is not None and subset not in ctx.subset_names[key]:
        known = sorted(ctx.subset_names[key])
        ctx.add(
            "MCD102",
            f"service {ref} has no subset {subset!r}"
            + (f" (it has: {', '.join(known)})" if known else " (it defines no subsets)"),
            ctx.at(route, *path, "subset"),
        )
    if port is not None and port not in ports:
        known_ports = ", ".join(str(p) for p in sorted(ports))
        ctx.add(
            "MCD103",
            f"service {ref} has no port {port} (it exposes: {known_ports})",
            ctx.at(route, *path, "port"),
        )


def _match_key(m: Match) -> object:
    """Two match blocks that match the same requests, whatever the order of their lists."""
    return (
        m.path,
        frozenset(x.upper() for x in m.methods) if m.methods else None,
        frozenset(m.headers) if m.headers else None,
        frozenset(m.query_params) if m.query_params else None,
    )


def _regexes(m: Match) -> list[tuple[str, tuple[str | int, ...]]]:
    """(pattern, path below the match block) of every regex in one match block."""
    found: list[tuple[str, tuple[str | int, ...]]] = []
    if m.path is not None and m.path.regex is not None:
        found.append((m.path.regex, ("path", "regex")))
    for k, h in enumerate(m.headers):
        if h.regex is not None:
            found.append((h.regex, ("headers", k, "regex")))
    for k, q in enumerate(m.query_params):
        if q.regex is not None:
            found.append((q.regex, ("queryParams", k, "regex")))
    return found


def _rule_label(rule: RouteRule, i: int) -> str:
    return f"rule {rule.name!r}" if rule.name else f"rules[{i}]"


def _check_references(ctx: CheckContext, route: Route, i: int, rule: RouteRule) -> None:
    """MCD101-103 of one rule: they depend on the services, so they always run."""
    ports_of = ctx.port_numbers
    subsets_of = ctx.subset_names
    for j, d in enumerate(rule.destinations):
        ref = d.service
        key = (ref.namespace, ref.name)
        ports = ports_of.get(key)
        # The common case in one test: a known service, subset and port.
        if (
            ports is None
            or (d.subset is not None and d.subset not in subsets_of[key])
            or (d.port is not None and d.port not in ports)
        ):
            check_reference(ctx, route, ("rules", i, "destinations", j), ref, d.subset, d.port)
    if rule.mirror is not None:
        mr = rule.mirror
        check_reference(ctx, route, ("rules", i, "mirror"), mr.service, mr.subset, mr.port)


def _check_rule(ctx: CheckContext, route: Route, i: int, rule: RouteRule) -> None:
    """The checks of one rule that look at nothing but the rule."""
    total = 0
    for d in rule.destinations:
        total += d.weight
    if total != 100:
        shown = " + ".join(str(d.weight) for d in rule.destinations)
        ctx.add(
            "MCD104",
            f"destination weights sum to {total} ({shown}), not 100",
            ctx.at(route, "rules", i, "destinations"),
        )
    retries = rule.retries
    for j, m in enumerate(rule.matches):
        if (m.path is not None and m.path.regex is not None) or m.headers or m.query_params:
            for pattern, sub in _regexes(m):
                problem = regex_problem(pattern)
                if problem is not None:
                    loc = route.value_loc(("spec", "rules", i, "matches", j, *sub))
                    ctx.add(problem[0], problem[1], loc)
        if retries is not None and retries.attempts > 0 and m.methods:
            bad = sorted({x.upper() for x in m.methods} & set(NON_IDEMPOTENT))
            if bad:
                ctx.add(
                    "MCD111",
                    f"retries on a rule that matches {', '.join(bad)} (not idempotent): a retried"
                    " request may be applied twice; split the writes into a rule without retries",
                    ctx.at(route, "rules", i, "retries"),
                )
                retries = None  # once per rule

    retries = rule.retries
    if retries is not None and retries.attempts > 0:
        per_try = retries.per_try_timeout
        if rule.timeout is not None and per_try is not None:
            budget = (retries.attempts + 1) * per_try
            if rule.timeout + _EPSILON < budget:
                ctx.add(
                    "MCD110",
                    f"timeout {rule.timeout:g}s is shorter than (attempts {retries.attempts} + 1)"
                    f" x perTryTimeout {per_try:g}s = {budget:g}s: the last tries never happen",
                    ctx.at(route, "rules", i, "timeout"),
                )


_MAX_PAIRWISE_MATCHES = 200  # beyond this many match blocks in one Route, identical ones only


def _covers(broad: Match, narrow: Match) -> bool:
    """Every request `narrow` matches, `broad` matches too (a sound, partial test: a prefix
    covers longer prefixes and exact paths under it; methods, headers and query parameters of
    `broad` must all be required by `narrow` as well). Regexes are never compared."""
    bp = broad.path
    if bp is not None:
        np_ = narrow.path
        if bp.type != "prefix" or np_ is None or np_.type == "regex":
            if bp != np_:
                return False
        elif not np_.value.startswith(bp.value):
            return False
    if broad.methods:
        if not narrow.methods:
            return False
        if not {m.upper() for m in narrow.methods} <= {m.upper() for m in broad.methods}:
            return False
    return set(broad.headers) <= set(narrow.headers) and set(broad.query_params) <= set(
        narrow.query_params
    )


def _check_reachability(ctx: CheckContext, route: Route) -> None:
    seen: dict[object, tuple[int, int]] = {}
    earlier_blocks: list[tuple[int, int, Match]] = []
    pairwise = sum(len(r.matches) for r in route.rules) <= _MAX_PAIRWISE_MATCHES
    for i, rule in enumerate(route.rules):
        if not rule.matches:
            catch_all: int | None = i
        else:
            catch_all = None
            for j, m in enumerate(rule.matches):
                key = _match_key(m)
                earlier = seen.get(key)
                if earlier is None:
                    seen[key] = (i, j)
                elif earlier[0] != i:
                    at = where(ctx.at(route, "rules", earlier[0], "matches", earlier[1]))
                    ctx.add(
                        "MCD107",
                        f"{_rule_label(rule, i)}: match block {j} is shadowed by an identical "
                        f"match in rules[{earlier[0]}] ({at})",
                        ctx.at(route, "rules", i, "matches", j),
                    )
                if earlier is None and pairwise:
                    broader = next(
                        ((bi, bj) for bi, bj, b in earlier_blocks if bi != i and _covers(b, m)),
                        None,
                    )
                    if broader is not None:
                        at = where(ctx.at(route, "rules", broader[0], "matches", broader[1]))
                        ctx.add(
                            "MCD107",
                            f"{_rule_label(rule, i)}: match block {j} is shadowed by a broader "
                            f"match in rules[{broader[0]}] ({at}) that comes first",
                            ctx.at(route, "rules", i, "matches", j),
                        )
                    earlier_blocks.append((i, j, m))
                if m.is_catch_all:
                    catch_all = i
        if catch_all is not None:
            for k in range(i + 1, len(route.rules)):
                ctx.add(
                    "MCD107",
                    f"{_rule_label(route.rules[k], k)} is unreachable: {_rule_label(rule, i)} "
                    f"before it matches every request ({where(ctx.at(route, 'rules', i))})",
                    ctx.at(route, "rules", k),
                )
            return


def check(ctx: CheckContext) -> None:
    model = ctx.model
    for host_key, routes in model.routes_by_host.items():
        first = routes[0]
        for other in routes[1:]:
            ctx.add(
                "MCD106",
                f"second Route for host {other.host}: Route {first.name!r} already routes it "
                f"({where(ctx.at(first, 'host'))})",
                ctx.at(other, "host"),
            )
        svc = model.services_by_key.get(host_key)
        for route in routes:
            if svc is None:
                ctx.add("MCD101", f"Route host: unknown service {route.host}", ctx.at(route, "host"))
            elif not any(p.protocol == "http" for p in svc.ports):
                ctx.add(
                    "MCD130",
                    f"Route host {route.host} has no http port: HTTP routing never applies to it",
                    ctx.at(route, "host"),
                )
    for route in model.routes:
        for i, rule in enumerate(route.rules):
            _check_references(ctx, route, i, rule)
        ctx.local(route, partial(_check_local, ctx, route))


def _check_local(ctx: CheckContext, route: Route) -> None:
    for i, rule in enumerate(route.rules):
        _check_rule(ctx, route, i, rule)
    _check_reachability(ctx, route)
