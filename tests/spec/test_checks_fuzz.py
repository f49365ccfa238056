"""Property test: for any model the typed model can hold (schema-valid or not quite), the
checks never raise, only use catalogue codes, and give the same answer with a warm memo, a
fresh memo, and on a second run."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.language.checks import LocalMemo, run_checks
from reconciler.language.codes import CATALOGUE
from reconciler.language.model import (
    AuthorizationPolicy,
    AuthorizationRule,
    Condition,
    ConfigModel,
    Destination,
    Endpoint,
    FrozenDict,
    HeaderMatch,
    Match,
    Mesh,
    MtlsSettings,
    PathMatch,
    Port,
    Retries,
    RolloutPolicy,
    Route,
    RouteRule,
    RuleFrom,
    RuleOperation,
    RuleSource,
    RuleTo,
    Selector,
    Service,
    ServiceRef,
    Stage,
    Subset,
    SubsetPolicy,
    TrafficPolicy,
)

NAMES = st.sampled_from(["a", "b", "web", "db"])
NAMESPACES = st.sampled_from(["default", "prod", "meshcd-system"])
MODES = st.sampled_from(["STRICT", "PERMISSIVE", "DISABLE"])
LABELS = st.builds(FrozenDict, st.dictionaries(st.sampled_from(["v", "z"]), st.sampled_from(["1", "2"]), max_size=2))
REFS = st.builds(ServiceRef, NAMES, NAMESPACES)
PATTERNS = st.sampled_from(["^/a$", "(a+)+", "(?=x)", "[", "^/(b|bb)+$", "", r"\d+"])
STRINGS = st.sampled_from(["", "*", "prod", "x*", "*x", "td/ns/prod/sa/web", "10.0.0.0/8", "300.1.1.1", "8080", "5432", "GET", "POST"])
KEYS = st.sampled_from(["request.headers[x]", "source.ip", "source.namespace", "bogus", "source.principal", "destination.ip"])


def tup(s: st.SearchStrategy[object], n: int = 3) -> st.SearchStrategy[tuple[object, ...]]:
    return st.lists(s, max_size=n).map(tuple)


services = st.builds(
    Service,
    name=NAMES, namespace=NAMESPACES,
    ports=tup(st.builds(Port, st.sampled_from(["http", "tcp", "x"]), st.sampled_from([80, 8080, 5432]), st.sampled_from(["http", "tcp"]))),
    subsets=tup(st.builds(Subset, st.sampled_from(["v1", "v2"]), LABELS)),
    endpoints=tup(st.builds(Endpoint, st.sampled_from(["127.0.0.1:1", "x", "[::1]:80", "1.2.3.4:0", "h.example:8080", "[zz]:1"]), LABELS)),
    egress=st.one_of(st.none(), tup(REFS)),
)
matches = st.builds(
    Match,
    path=st.one_of(st.none(), st.builds(PathMatch, prefix=st.sampled_from(["/", "/a"])), st.builds(PathMatch, regex=PATTERNS)),
    methods=tup(st.sampled_from(["GET", "POST", "patch"])),
    headers=tup(st.builds(HeaderMatch, st.sampled_from(["x", "y"]), regex=PATTERNS)),
)
rules = st.builds(
    RouteRule,
    destinations=tup(st.builds(Destination, REFS, st.sampled_from([None, "v1", "v9"]), st.sampled_from([None, 80, 9]), st.integers(0, 120))),
    matches=tup(matches),
    timeout=st.sampled_from([None, 0.5, 3.0]),
    retries=st.one_of(st.none(), st.builds(Retries, st.integers(0, 3), st.sampled_from([None, 0.1, 1.0]))),
)
routes = st.builds(Route, name=NAMES, namespace=NAMESPACES, host=REFS, rules=tup(rules, 4))
traffic = st.builds(
    TrafficPolicy, name=NAMES, namespace=NAMESPACES, service=REFS,
    mtls=st.one_of(st.none(), st.builds(MtlsSettings, MODES)),
    subsets=tup(st.builds(SubsetPolicy, st.sampled_from(["v1", "v2", "v9"]), mtls=st.one_of(st.none(), st.builds(MtlsSettings, MODES)))),
)
sources = st.builds(RuleSource, tup(STRINGS), tup(STRINGS), tup(STRINGS), tup(STRINGS), tup(STRINGS), tup(STRINGS))
operations = st.builds(RuleOperation, tup(STRINGS), tup(STRINGS), tup(STRINGS), tup(STRINGS), tup(STRINGS), tup(STRINGS), tup(STRINGS), tup(STRINGS))
authz = st.builds(
    AuthorizationPolicy, name=NAMES, namespace=NAMESPACES,
    selector=st.one_of(st.none(), st.builds(Selector, tup(REFS))),
    action=st.sampled_from(["ALLOW", "DENY", "AUDIT"]),
    rules=tup(st.builds(
        AuthorizationRule,
        tup(st.builds(RuleFrom, sources)), tup(st.builds(RuleTo, operations)),
        tup(st.builds(Condition, KEYS, tup(STRINGS), tup(STRINGS))),
    )),
)
stages = st.one_of(
    st.builds(Stage, st.just(1.0), count=st.integers(0, 5)),
    st.builds(Stage, st.just(1.0), percent=st.sampled_from([0, 10, 50, 100, 150])),
)
rollouts = st.builds(RolloutPolicy, name=NAMES, namespace=NAMESPACES, stages=tup(stages, 4), services=tup(REFS))
meshes = st.builds(
    Mesh, name=NAMES, trust_domain=st.just("td"), mtls=st.builds(MtlsSettings, MODES),
    default_rollout_policy=st.sampled_from([None, "a", "zz"]),
)
models = st.builds(
    ConfigModel, tup(meshes, 2), tup(services, 4), tup(routes), tup(traffic), tup(authz, 4), tup(rollouts, 2)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models)
def test_checks_never_raise_and_are_stable(model: ConfigModel) -> None:
    first = run_checks(model, LocalMemo())
    assert {f.code for f in first} <= set(CATALOGUE)
    memo = LocalMemo()
    assert run_checks(model, memo) == first
    assert run_checks(model, memo) == first  # warm memo
    assert run_checks(model) == first  # the process-wide memo
