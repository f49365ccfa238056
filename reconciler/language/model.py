"""The typed, immutable model of a config repo, built from documents that passed the schema.

Everything here is a frozen dataclass holding tuples and `FrozenDict`s, so a model can be
shared between threads, cached, hashed and compared. Python attribute names are the
snake_case of the YAML's camelCase fields (`perTryTimeout` -> `per_try_timeout`; `from` ->
`from_`), and nesting mirrors the YAML, so `resource.loc(("spec", "rules", 0, "timeout"))`
names the YAML path of `resource.rules[0].timeout`.

Defaults from docs/config-language.md are applied here: namespace "default", identity
serviceAccount = the service name, destination weight 100, the Mesh defaults, etc. Durations
are float seconds. Service references are resolved to `ServiceRef(name, namespace)`.

Positions never take part in equality: two resources that differ only in where they sit in
the repo compare equal (so a plan does not see a moved line as a change).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from reconciler.language.findings import Location

API_VERSION = "meshcd.dev/v1alpha1"
DEFAULT_NAMESPACE = "default"

K = TypeVar("K")
V = TypeVar("V")

# A path into a YAML document: mapping keys (str) and sequence indexes (int).
FieldPath = tuple["str | int", ...]


class FrozenDict(Mapping[K, V]):
    """An immutable, hashable mapping (labels, header maps)."""

    __slots__ = ("_d", "_h")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._d: dict[K, V] = dict(items)
        self._h: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._d[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(frozenset(self._d.items()))
        return self._h

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenDict):
            return self._d == other._d
        if isinstance(other, Mapping):
            return self._d == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenDict({self._d!r})"


EMPTY: FrozenDict[str, str] = FrozenDict()


# --- positions ------------------------------------------------------------------------------


Spot = tuple[int, int, int, int]  # key line, key column, value line, value column (1-based)


class Positions:
    """Where each field of one document sits. Never part of equality or hashing.

    A spot is (key line, key column, value line, value column), 1-based: the key is the
    mapping key that holds the path (for a sequence item, the item's start) and the value is
    where the value itself starts. Spots come from `spots`, or are looked up on first use by
    `lookup` (the loader passes one that walks the parsed YAML, so that documents nobody
    reports on cost nothing) and then remembered.
    """

    __slots__ = ("_lookup", "file", "spots")

    def __init__(
        self,
        file: str,
        spots: dict[FieldPath, Spot] | None = None,
        lookup: Callable[[FieldPath], Spot | None] | None = None,
    ) -> None:
        self.file = file
        self.spots: dict[FieldPath, Spot] = spots if spots is not None else {}
        self._lookup = lookup

    def loc(self, path: Sequence[str | int] = ()) -> Location:
        """The key's place for `path`, or of its nearest ancestor that has one."""
        s = self._find(tuple(path))
        return Location(self.file, s[0], s[1]) if s else Location(self.file)

    def value_loc(self, path: Sequence[str | int] = ()) -> Location:
        """Where the value at `path` starts (nearest ancestor fallback)."""
        s = self._find(tuple(path))
        return Location(self.file, s[2], s[3]) if s else Location(self.file)

    def has(self, path: Sequence[str | int]) -> bool:
        """Whether `path` was written in the YAML (not a default)."""
        return self._get(tuple(path)) is not None

    def _get(self, p: FieldPath) -> Spot | None:
        s = self.spots.get(p)
        if s is None and self._lookup is not None:
            s = self._lookup(p)
            if s is not None:
                self.spots[p] = s
        return s

    def _find(self, p: FieldPath) -> Spot | None:
        while True:
            s = self._get(p)
            if s is not None or not p:
                return s
            p = p[:-1]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Positions)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"Positions({self.file!r})"


# --- service references and durations -------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class ServiceRef:
    """A resolved reference to a service: `name` or `name.namespace` in YAML."""

    name: str
    namespace: str

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name): the key of `ConfigModel.services_by_key`."""
        return (self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.name}.{self.namespace}"


def resolve_service_ref(ref: str, default_namespace: str) -> ServiceRef:
    """`"cart"` -> cart in `default_namespace`; `"cart.shop"` -> cart in shop."""
    name, dot, ns = ref.partition(".")
    return ServiceRef(name, ns if dot else default_namespace)


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """`"250ms"` -> 0.25, `"2m"` -> 120.0. Raises ValueError on anything else."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"not a duration: {text!r} (want a number and ms|s|m|h, e.g. 250ms)")
    return float(m.group(1)) * _UNIT[m.group(2)]


# --- the resources --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """What every kind has: metadata, and where it came from."""

    KIND: ClassVar[str] = ""

    name: str
    namespace: str = DEFAULT_NAMESPACE
    labels: FrozenDict[str, str] = EMPTY
    positions: Positions = field(
        default_factory=lambda: Positions("<memory>"), compare=False, hash=False, repr=False
    )
    doc_index: int = field(default=0, compare=False, hash=False, repr=False)

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def key(self) -> tuple[str, str, str]:
        """(kind, namespace, name)."""
        return (self.KIND, self.namespace, self.name)

    @property
    def file(self) -> str:
        return self.positions.file

    @property
    def location(self) -> Location:
        """Where the document starts."""
        return self.positions.loc(())

    def loc(self, path: Sequence[str | int] = ()) -> Location:
        """Location of a field by its YAML path, e.g. ("spec", "rules", 0, "timeout");
        falls back to the nearest ancestor that has a position."""
        return self.positions.loc(path)

    def value_loc(self, path: Sequence[str | int] = ()) -> Location:
        return self.positions.value_loc(path)

    def resolve_ref(self, text: str) -> ServiceRef:
        """Resolve a service reference written in this resource's namespace."""
        return resolve_service_ref(text, self.namespace)


# Mesh


@dataclass(frozen=True, slots=True)
class MtlsSettings:
    mode: str = "STRICT"  # STRICT | PERMISSIVE | DISABLE


@dataclass(frozen=True, slots=True)
class AuthorizationSettings:
    default: str = "allow"  # allow | deny


@dataclass(frozen=True, slots=True)
class Telemetry:
    tracing_sampling_percent: float = 1.0
    access_log_sampling_percent: float = 100.0


# Static mode's default: proxy i of the static fleet takes outbound HTTP on 20000 + i.
DEFAULT_OUTBOUND_PORT_BASE = 20000


@dataclass(frozen=True, slots=True, kw_only=True)
class Mesh(Resource):
    KIND: ClassVar[str] = "Mesh"

    trust_domain: str
    root_namespace: str = "meshcd-system"
    mtls: MtlsSettings = MtlsSettings()
    authorization: AuthorizationSettings = AuthorizationSettings()
    telemetry: Telemetry = Telemetry()
    default_rollout_policy: str | None = None
    # Static mode (renderers.default_fleet): proxy i takes its app's outbound HTTP here + i.
    outbound_port_base: int = DEFAULT_OUTBOUND_PORT_BASE

    @property
    def default_deny(self) -> bool:
        return self.authorization.default == "deny"

    def spiffe_id(self, namespace: str, service_account: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}"

    def principal(self, namespace: str, service_account: str) -> str:
        """The Istio-style principal `<trustDomain>/ns/<ns>/sa/<sa>`."""
        return f"{self.trust_domain}/ns/{namespace}/sa/{service_account}"


# Service


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    number: int
    protocol: str = "http"  # http | tcp


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: FrozenDict[str, str] = EMPTY


_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # host:port as written: IPv4, [IPv6] or DNS name
    labels: FrozenDict[str, str] = EMPTY

    def split(self) -> tuple[str, int] | None:
        """(host, port) with IPv6 brackets removed, or None when `address` is not host:port
        with a port in 1..65535 (that is finding MCD129)."""
        m = _HOSTPORT.match(self.address)
        if m is None:
            return None
        port = int(m.group("port"))
        if not 0 < port < 65536:
            return None
        return (m.group("v6") or m.group("host"), port)

    @property
    def host(self) -> str | None:
        hp = self.split()
        return hp[0] if hp else None

    @property
    def port(self) -> int | None:
        hp = self.split()
        return hp[1] if hp else None

    def in_subset(self, subset: Subset) -> bool:
        return all(self.labels.get(k) == v for k, v in subset.labels.items())


@dataclass(frozen=True, slots=True)
class Identity:
    service_account: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Service(Resource):
    KIND: ClassVar[str] = "Service"

    ports: tuple[Port, ...]
    subsets: tuple[Subset, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    identity: Identity | None = None  # built models always set it (default: the name)
    egress: tuple[ServiceRef, ...] | None = None  # None: may call anything; (): nothing

    @property
    def ref(self) -> ServiceRef:
        return ServiceRef(self.name, self.namespace)

    @property
    def service_account(self) -> str:
        return self.identity.service_account if self.identity else self.name

    def port(self, number: int) -> Port | None:
        return next((p for p in self.ports if p.number == number), None)

    def port_named(self, name: str) -> Port | None:
        return next((p for p in self.ports if p.name == name), None)

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def endpoints_in(self, subset: Subset | str | None) -> tuple[Endpoint, ...]:
        """Static endpoints of a subset (all of them for None)."""
        if subset is None:
            return self.endpoints
        s = self.subset(subset) if isinstance(subset, str) else subset
        if s is None:
            return ()
        return tuple(e for e in self.endpoints if e.in_subset(s))


# Route


@dataclass(frozen=True, slots=True)
class PathMatch:
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @property
    def type(self) -> str:
        """"exact" | "prefix" | "regex"."""
        return "exact" if self.exact is not None else "prefix" if self.prefix is not None else "regex"

    @property
    def value(self) -> str:
        return next(v for v in (self.exact, self.prefix, self.regex, "") if v is not None)


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    present: bool | None = None

    @property
    def type(self) -> str:
        """"exact" | "prefix" | "regex" | "present"."""
        for t in ("exact", "prefix", "regex"):
            if getattr(self, t) is not None:
                return t
        return "present"


@dataclass(frozen=True, slots=True)
class QueryParamMatch:
    name: str
    exact: str | None = None
    regex: str | None = None
    present: bool | None = None

    @property
    def type(self) -> str:
        """"exact" | "regex" | "present"."""
        return "exact" if self.exact is not None else "regex" if self.regex is not None else "present"


@dataclass(frozen=True, slots=True)
class Match:
    """One match block: all its fields ANDed. Empty = matches everything."""

    path: PathMatch | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()

    @property
    def is_catch_all(self) -> bool:
        return (
            (self.path is None or (self.path.type == "prefix" and self.path.value in ("", "/")))
            and not self.methods
            and not self.headers
            and not self.query_params
        )


@dataclass(frozen=True, slots=True)
class Destination:
    service: ServiceRef
    subset: str | None = None
    port: int | None = None
    weight: int = 100


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FaultDelay:
    fixed: float
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class FaultAbort:
    http_status: int
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Fault:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True, slots=True)
class Mirror:
    service: ServiceRef
    subset: str | None = None
    port: int | None = None
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class HeaderOps:
    add: FrozenDict[str, str] = EMPTY
    set: FrozenDict[str, str] = EMPTY
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    request: HeaderOps = HeaderOps()
    response: HeaderOps = HeaderOps()


@dataclass(frozen=True, slots=True)
class RouteRule:
    destinations: tuple[Destination, ...]
    name: str | None = None
    matches: tuple[Match, ...] = ()  # empty: matches everything
    timeout: float | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirror: Mirror | None = None
    headers: HeaderPolicy | None = None

    @property
    def is_catch_all(self) -> bool:
        return not self.matches or any(m.is_catch_all for m in self.matches)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route(Resource):
    KIND: ClassVar[str] = "Route"

    host: ServiceRef
    rules: tuple[RouteRule, ...]


# TrafficPolicy


@dataclass(frozen=True, slots=True)
class HashOn:
    header: str | None = None
    cookie: str | None = None
    source_ip: bool | None = None


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    type: str = "round_robin"  # round_robin | least_request | random | consistent_hash
    hash_on: HashOn | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests_per_connection: int | None = None  # 0 = unlimited
    connect_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx: int | None = None
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: float | None = None


@dataclass(frozen=True, slots=True)
class SubsetPolicy:
    name: str
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    mtls: MtlsSettings | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficPolicy(Resource):
    KIND: ClassVar[str] = "TrafficPolicy"

    service: ServiceRef
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    mtls: MtlsSettings | None = None
    subsets: tuple[SubsetPolicy, ...] = ()


# AuthorizationPolicy (Istio structure; `selector.services` replaces `matchLabels`)


@dataclass(frozen=True, slots=True)
class Selector:
    services: tuple[ServiceRef, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleSource:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleFrom:
    source: RuleSource = RuleSource()


@dataclass(frozen=True, slots=True)
class RuleOperation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()

    @property
    def uses_http_fields(self) -> bool:
        return bool(
            self.hosts or self.not_hosts or self.methods or self.not_methods
            or self.paths or self.not_paths
        )


@dataclass(frozen=True, slots=True)
class RuleTo:
    operation: RuleOperation = RuleOperation()


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorizationRule:
    from_: tuple[RuleFrom, ...] = ()
    to: tuple[RuleTo, ...] = ()
    when: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizationPolicy(Resource):
    KIND: ClassVar[str] = "AuthorizationPolicy"

    selector: Selector | None = None  # None: namespace-wide, or mesh-wide in rootNamespace
    action: str = "ALLOW"  # ALLOW | DENY | AUDIT
    rules: tuple[AuthorizationRule, ...] = ()


# RolloutPolicy


@dataclass(frozen=True, slots=True)
class Stage:
    bake: float  # seconds
    count: int | None = None  # exactly one of count | percent is set
    percent: float | None = None


@dataclass(frozen=True, slots=True)
class Analysis:
    max_error_rate_percent: float = 1.0
    max_p99_latency_ms: float = 500.0
    max_increase_over_baseline_percent: float = 50.0
    min_requests: int = 50
    confidence: float = 0.95
    on_inconclusive: str = "pause"  # pause | extend | pass


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutPolicy(Resource):
    KIND: ClassVar[str] = "RolloutPolicy"

    stages: tuple[Stage, ...]
    services: tuple[ServiceRef, ...] = ()
    analysis: Analysis = Analysis()
    on_failure: str = "rollback"  # rollback | pause
    on_new_commit: str = "restart"  # restart | finish-then-next


KINDS: dict[str, type[Resource]] = {
    c.KIND: c for c in (Mesh, Service, Route, TrafficPolicy, AuthorizationPolicy, RolloutPolicy)
}

R = TypeVar("R", bound=Resource)


def _by_name(items: Iterable[R]) -> dict[tuple[str, str], R]:
    out: dict[tuple[str, str], R] = {}
    for r in items:
        out.setdefault((r.namespace, r.name), r)  # first wins; duplicates are MCD105
    return out


@dataclass(frozen=True, eq=False)
class ConfigModel:
    """Every resource of one revision, in (file, document) order, plus indexes.

    Indexes keyed by (namespace, name) keep the first resource on duplicates (the checks
    report the others). `meshes` holds every Mesh document (exactly one is valid: MCD100).
    """

    meshes: tuple[Mesh, ...] = ()
    services: tuple[Service, ...] = ()
    routes: tuple[Route, ...] = ()
    traffic_policies: tuple[TrafficPolicy, ...] = ()
    authorization_policies: tuple[AuthorizationPolicy, ...] = ()
    rollout_policies: tuple[RolloutPolicy, ...] = ()

    services_by_key: Mapping[tuple[str, str], Service] = field(init=False, repr=False)
    routes_by_host: Mapping[tuple[str, str], tuple[Route, ...]] = field(init=False, repr=False)
    traffic_policies_by_service: Mapping[tuple[str, str], tuple[TrafficPolicy, ...]] = field(
        init=False, repr=False
    )
    authorization_policies_by_namespace: Mapping[str, tuple[AuthorizationPolicy, ...]] = field(
        init=False, repr=False
    )
    rollout_policies_by_key: Mapping[tuple[str, str], RolloutPolicy] = field(
        init=False, repr=False
    )
    namespaces: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        routes: dict[tuple[str, str], list[Route]] = {}
        for r in self.routes:
            routes.setdefault(r.host.key, []).append(r)
        tps: dict[tuple[str, str], list[TrafficPolicy]] = {}
        for t in self.traffic_policies:
            tps.setdefault(t.service.key, []).append(t)
        authz: dict[str, list[AuthorizationPolicy]] = {}
        for a in self.authorization_policies:
            authz.setdefault(a.namespace, []).append(a)
        s = object.__setattr__
        s(self, "services_by_key", _by_name(self.services))
        s(self, "routes_by_host", {k: tuple(v) for k, v in routes.items()})
        s(self, "traffic_policies_by_service", {k: tuple(v) for k, v in tps.items()})
        s(self, "authorization_policies_by_namespace", {k: tuple(v) for k, v in authz.items()})
        s(self, "rollout_policies_by_key", _by_name(self.rollout_policies))
        s(self, "namespaces", frozenset(svc.namespace for svc in self.services))

    @classmethod
    def from_resources(cls, resources: Iterable[Resource]) -> ConfigModel:
        """Sort resources into their kinds, keeping their order."""
        buckets: dict[str, list[Resource]] = {k: [] for k in KINDS}
        for r in resources:
            buckets[r.KIND].append(r)
        return cls(
            meshes=tuple(buckets["Mesh"]),  # type: ignore[arg-type]
            services=tuple(buckets["Service"]),  # type: ignore[arg-type]
            routes=tuple(buckets["Route"]),  # type: ignore[arg-type]
            traffic_policies=tuple(buckets["TrafficPolicy"]),  # type: ignore[arg-type]
            authorization_policies=tuple(buckets["AuthorizationPolicy"]),  # type: ignore[arg-type]
            rollout_policies=tuple(buckets["RolloutPolicy"]),  # type: ignore[arg-type]
        )

    @property
    def mesh(self) -> Mesh | None:
        """The Mesh (the first one if there are several; None if there is none)."""
        return self.meshes[0] if self.meshes else None

    def resources(self) -> Iterator[Resource]:
        """All resources, kind by kind, each kind in (file, document) order."""
        yield from self.meshes
        yield from self.services
        yield from self.routes
        yield from self.traffic_policies
        yield from self.authorization_policies
        yield from self.rollout_policies

    def service(self, ref: ServiceRef | tuple[str, str]) -> Service | None:
        """The service a reference names, or None. Accepts ServiceRef or (namespace, name)."""
        key = ref.key if isinstance(ref, ServiceRef) else ref
        return self.services_by_key.get(key)

    def route_for(self, ref: ServiceRef) -> Route | None:
        routes = self.routes_by_host.get(ref.key)
        return routes[0] if routes else None

    def rollout_policy_for(self, ref: ServiceRef) -> RolloutPolicy | None:
        """The RolloutPolicy covering a service: the first that lists it, else the Mesh's
        defaultRolloutPolicy (looked up in rootNamespace, then "default")."""
        for rp in self.rollout_policies:
            if ref in rp.services:
                return rp
        mesh = self.mesh
        if mesh is None or mesh.default_rollout_policy is None:
            return None
        for ns in (mesh.root_namespace, DEFAULT_NAMESPACE):
            rp_ = self.rollout_policies_by_key.get((ns, mesh.default_rollout_policy))
            if rp_ is not None:
                return rp_
        return None


MeshModel = ConfigModel  # the other name the design notes use
