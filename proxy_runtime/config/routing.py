"""The outbound route matcher: Host -> virtual host -> first matching route -> weighted cluster.

Pure: randomness is passed in (`choose_cluster(route, r)` with r in [0, 1)).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .errors import SnapshotError
from .matchers import compile_regex
from .model import HeaderMatch, Outbound, PathMatch, QueryParamMatch, Route, RouteMatch, VirtualHost

# (method, path without query, first value of each query param or None if not parsed, headers)
_Query = dict[str, str]
RouteMatcher = Callable[[str, str, Callable[[], _Query], Mapping[str, str]], bool]


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: Route
    index: int  # position in the virtual host's routes
    matches: RouteMatcher
    clusters: tuple[str, ...]
    cumulative_weights: tuple[int, ...]  # running sums of the weights, last = total
    total_weight: int

    @property
    def name(self) -> str:
        return self.route.name or f"#{self.index}"


@dataclass(frozen=True, slots=True)
class CompiledVirtualHost:
    virtual_host: VirtualHost
    routes: tuple[CompiledRoute, ...]

    @property
    def name(self) -> str:
        return self.virtual_host.name


@dataclass(frozen=True, slots=True)
class CompiledOutbound:
    outbound: Outbound
    hosts: Mapping[str, CompiledVirtualHost]  # lowercased domain -> virtual host
    wildcard: CompiledVirtualHost | None  # the virtual host with domain "*"


def _path_pred(m: PathMatch, path: str) -> Callable[[str], bool]:
    if m.exact is not None:
        exact = m.exact
        return lambda p: p == exact
    if m.prefix is not None:
        prefix = m.prefix
        return lambda p: p.startswith(prefix)
    assert m.regex is not None
    rx = compile_regex(m.regex, f"{path}.regex")
    return lambda p: rx.fullmatch(p) is not None


def _header_pred(m: HeaderMatch, path: str) -> Callable[[Mapping[str, str]], bool]:
    name = m.name.lower()
    if m.present is not None:
        want = m.present
        return lambda h: (name in h) is want
    if m.exact is not None:
        exact = m.exact
        return lambda h: h.get(name) == exact
    if m.prefix is not None:
        prefix = m.prefix

        def pre(h: Mapping[str, str]) -> bool:
            v = h.get(name)
            return v is not None and v.startswith(prefix)

        return pre
    assert m.regex is not None
    rx = compile_regex(m.regex, f"{path}.regex")

    def regex(h: Mapping[str, str]) -> bool:
        v = h.get(name)
        return v is not None and rx.fullmatch(v) is not None

    return regex


def _query_pred(m: QueryParamMatch, path: str) -> Callable[[_Query], bool]:
    name = m.name
    if m.present is not None:
        want = m.present
        return lambda q: (name in q) is want
    if m.exact is not None:
        exact = m.exact
        return lambda q: q.get(name) == exact
    assert m.regex is not None
    rx = compile_regex(m.regex, f"{path}.regex")

    def regex(q: _Query) -> bool:
        v = q.get(name)
        return v is not None and rx.fullmatch(v) is not None

    return regex


def _compile_match(m: RouteMatch, path: str) -> RouteMatcher:
    methods = frozenset(m.methods)
    path_pred = _path_pred(m.path, f"{path}.path") if m.path is not None else None
    headers = tuple(_header_pred(h, f"{path}.headers[{i}]") for i, h in enumerate(m.headers))
    queries = tuple(
        _query_pred(q, f"{path}.queryParams[{i}]") for i, q in enumerate(m.query_params)
    )

    def matches(method: str, p: str, query: Callable[[], _Query], hdrs: Mapping[str, str]) -> bool:
        if methods and method not in methods:
            return False
        if path_pred is not None and not path_pred(p):
            return False
        for hp in headers:
            if not hp(hdrs):
                return False
        if queries:
            q = query()
            for qp in queries:
                if not qp(q):
                    return False
        return True

    return matches


def compile_route(route: Route, index: int, path: str) -> CompiledRoute:
    cumulative: list[int] = []
    total = 0
    for wc in route.clusters:
        total += wc.weight
        cumulative.append(total)
    if total <= 0:
        raise SnapshotError(f"{path}.clusters", "weights must sum to more than 0")
    return CompiledRoute(
        route=route,
        index=index,
        matches=_compile_match(route.match, f"{path}.match"),
        clusters=tuple(wc.cluster for wc in route.clusters),
        cumulative_weights=tuple(cumulative),
        total_weight=total,
    )


def compile_outbound(outbound: Outbound, path: str = "outbound") -> CompiledOutbound:
    hosts: dict[str, CompiledVirtualHost] = {}
    owner: dict[str, str] = {}
    wildcard: CompiledVirtualHost | None = None
    for i, vh in enumerate(outbound.virtual_hosts):
        vpath = f"{path}.virtualHosts[{i}]"
        cvh = CompiledVirtualHost(
            vh,
            tuple(compile_route(r, j, f"{vpath}.routes[{j}]") for j, r in enumerate(vh.routes)),
        )
        for k, domain in enumerate(vh.domains):
            d = domain.lower()
            if "*" in d and d != "*":
                raise SnapshotError(
                    f"{vpath}.domains[{k}]",
                    f"{domain!r}: only the catch-all domain '*' may use a wildcard",
                )
            if d in owner:
                raise SnapshotError(
                    f"{vpath}.domains[{k}]", f"{domain!r} is already a domain of {owner[d]!r}"
                )
            owner[d] = vh.name
            if d == "*":
                wildcard = cvh
            else:
                hosts[d] = cvh
    return CompiledOutbound(outbound, hosts, wildcard)


def _strip_port(host: str) -> str | None:
    """host without a trailing :port, or None if there is no port."""
    colon = host.rfind(":")
    if colon == -1 or host.endswith("]"):
        return None
    tail = host[colon + 1 :]
    return host[:colon] if tail.isdigit() else None


def find_virtual_host(compiled: CompiledOutbound, host: str) -> CompiledVirtualHost | None:
    """Exact (case-insensitive) domain; else the host without its :port; else `*`; else None."""
    h = host.lower()
    vh = compiled.hosts.get(h)
    if vh is not None:
        return vh
    bare = _strip_port(h)
    if bare is not None:
        vh = compiled.hosts.get(bare)
        if vh is not None:
            return vh
    return compiled.wildcard


def parse_query(query: str) -> dict[str, str]:
    """First value of each parameter, as received (`a&b=` -> a="", b=""): Envoy compares
    query parameters without percent-decoding them, `+` included."""
    out: dict[str, str] = {}
    if not query:
        return out
    for part in query.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        if k not in out:
            out[k] = v
    return out


def select_route(
    compiled: CompiledOutbound,
    host: str,
    method: str,
    path_with_query: str,
    headers: Mapping[str, str],
) -> tuple[CompiledVirtualHost, CompiledRoute] | None:
    """The virtual host and the first route that matches, or None (the proxy answers 404).

    headers: lowercased names; several values of one header joined with ",".
    """
    vh = find_virtual_host(compiled, host)
    if vh is None:
        return None
    q = path_with_query.find("?")
    if q == -1:
        path, raw_query = path_with_query, ""
    else:
        path, raw_query = path_with_query[:q], path_with_query[q + 1 :]
    parsed: list[_Query] = []

    def query() -> _Query:  # parsed once, and only if a route looks at query params
        if not parsed:
            parsed.append(parse_query(raw_query))
        return parsed[0]

    for route in vh.routes:
        if route.matches(method, path, query, headers):
            return vh, route
    return None


def choose_cluster(route: CompiledRoute, r: float) -> str:
    """The weighted choice for a uniform r in [0, 1): deterministic given r."""
    i = bisect_right(route.cumulative_weights, r * route.total_weight)
    clusters: Sequence[str] = route.clusters
    return clusters[min(i, len(clusters) - 1)]
