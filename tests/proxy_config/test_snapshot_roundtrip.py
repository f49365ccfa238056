"""Random snapshots built in Python: the normal JSON form is schema-valid, parses back to the
same model, and is a fixed point (so its version is stable)."""

from __future__ import annotations

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy_runtime.config import (
    AuthorizationPolicy,
    Cluster,
    Condition,
    ConnectionPool,
    Endpoint,
    Fault,
    FaultAbort,
    FaultDelay,
    HashKey,
    HeaderEdits,
    HeaderMatch,
    Identity,
    Inbound,
    InboundListener,
    Mirror,
    Operation,
    Outbound,
    OutlierDetection,
    PathMatch,
    QueryParamMatch,
    RetryPolicy,
    Route,
    RouteMatch,
    Rule,
    Snapshot,
    Source,
    TcpListener,
    Telemetry,
    UpstreamTls,
    VirtualHost,
    WeightedCluster,
    compute_version,
    parse_snapshot,
    snapshot_schema,
    snapshot_to_json,
)

VALIDATOR = jsonschema.Draft202012Validator(snapshot_schema())

name = st.text("abcdefghij-.", min_size=1, max_size=8).filter(lambda s: s[0].isalnum())
token = st.text("abcxyz-", min_size=1, max_size=6)
text = st.text(max_size=6)  # any unicode, possibly empty
# a header value: any unicode but CR, LF, NUL and the other C0 controls and DEL; tabs are fine
header_value = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(
        chr(c) for c in (*range(0x09), *range(0x0A, 0x20), 0x7F))),
    max_size=6,
)
port = st.integers(0, 65535)
percent = st.floats(0, 100, allow_nan=False)
address = st.builds(
    lambda h, p: f"{h}:{p}",
    st.sampled_from(["127.0.0.1", "[::1]", "cart.shop"]),
    st.integers(1, 65535),
)
strs = st.lists(st.text("abc*/.:", min_size=1, max_size=5), max_size=2).map(tuple)
ports = st.lists(st.integers(1, 65535).map(str), max_size=2).map(tuple)
cidrs = st.lists(st.sampled_from(["10.0.0.0/8", "::1", "192.168.1.1"]), max_size=2).map(tuple)
spiffe = st.builds(lambda a, b: f"spiffe://td/ns/{a}/sa/{b}", name, name)


def one_of_fields(
    cls: type,
    required: dict[str, st.SearchStrategy[object]],
    choices: dict[str, st.SearchStrategy[object]],
) -> st.SearchStrategy[object]:
    return st.sampled_from(sorted(choices)).flatmap(
        lambda k: st.builds(cls, **required, **{k: choices[k]})
    )


source = st.builds(
    Source,
    principals=strs,
    not_principals=strs,
    namespaces=strs,
    not_namespaces=strs,
    ip_blocks=cidrs,
    not_ip_blocks=cidrs,
    remote_ip_blocks=cidrs,
    not_remote_ip_blocks=cidrs,
)
operation = st.builds(
    Operation,
    hosts=strs,
    not_hosts=strs,
    ports=ports,
    not_ports=ports,
    methods=strs,
    not_methods=strs,
    paths=strs,
    not_paths=strs,
)
condition = st.builds(
    Condition,
    key=st.sampled_from(
        ["request.headers[x-a]", "source.ip", "connection.sni", "destination.port"]
    ),
    values=st.lists(st.text("abc", min_size=1, max_size=3), min_size=1, max_size=2).map(tuple),
    not_values=strs,
)
rule = st.builds(
    Rule,
    sources=st.lists(source, max_size=2).map(tuple),
    operations=st.lists(operation, max_size=2).map(tuple),
    when=st.lists(condition, max_size=2).map(tuple),
)
policy = st.builds(
    AuthorizationPolicy,
    name=name,
    action=st.sampled_from(["ALLOW", "DENY", "AUDIT"]),
    rules=st.lists(rule, max_size=2).map(tuple),
)
inbound = st.builds(
    Inbound,
    service=name,
    namespace=name,
    listeners=st.lists(
        st.builds(
            InboundListener,
            port=port,
            local_address=address,
            protocol=st.sampled_from(["http", "tcp"]),
            mtls_mode=st.sampled_from(["STRICT", "PERMISSIVE", "DISABLE"]),
            bind_address=st.sampled_from(["0.0.0.0", "127.0.0.1", "::"]),
            service_port=st.none() | st.integers(1, 65535),
        ),
        max_size=2,
    ).map(tuple),
    policies=st.lists(policy, max_size=2).map(tuple),
    default_deny=st.booleans(),
)
path_match = one_of_fields(
    PathMatch, {}, {"exact": st.just("/a"), "prefix": st.just("/"), "regex": st.just("/x.*")}
)
header_match = one_of_fields(
    HeaderMatch,
    {"name": token},
    {"exact": text, "prefix": st.just("p"), "regex": st.just(".+"), "present": st.booleans()},
)
query_match = one_of_fields(
    QueryParamMatch,
    {"name": token},
    {"exact": text, "regex": st.just("[0-9]+"), "present": st.booleans()},
)
match = st.builds(
    RouteMatch,
    path=st.none() | path_match,
    methods=st.lists(st.sampled_from(["GET", "POST"]), max_size=2).map(tuple),
    headers=st.lists(header_match, max_size=2).map(tuple),
    query_params=st.lists(query_match, max_size=2).map(tuple),
)
edits = st.builds(
    HeaderEdits,
    add=st.dictionaries(token, header_value, max_size=2),
    set=st.dictionaries(token, header_value, max_size=2),
    remove=st.lists(token, max_size=2).map(tuple),
)
fault = st.one_of(
    st.builds(Fault, delay=st.builds(FaultDelay, fixed_ms=st.integers(0, 10_000), percent=percent)),
    st.builds(
        Fault,
        abort=st.builds(FaultAbort, http_status=st.integers(200, 599), percent=percent),
        delay=st.none() | st.builds(FaultDelay, fixed_ms=st.integers(0, 10), percent=percent),
    ),
)
route = st.builds(
    Route,
    clusters=st.lists(
        st.builds(WeightedCluster, cluster=name, weight=st.integers(0, 100)), min_size=1, max_size=3
    ).map(tuple),
    match=match,
    name=st.none() | name,
    timeout_ms=st.none() | st.integers(1, 60_000),
    retries=st.none()
    | st.builds(
        RetryPolicy,
        attempts=st.integers(0, 10),
        per_try_timeout_ms=st.none() | st.integers(1, 5000),
        retry_on=st.lists(
            st.sampled_from(["5xx", "reset", "connect-failure"]),
            min_size=1,
            max_size=2,
            unique=True,
        ).map(tuple),
    ),
    fault=st.none() | fault,
    mirror=st.none() | st.builds(Mirror, cluster=name, percent=percent),
    request_headers=st.none() | edits,
    response_headers=st.none() | edits,
)
outbound = st.builds(
    Outbound,
    port=port,
    bind_address=st.just("127.0.0.1"),
    virtual_hosts=st.lists(
        st.builds(
            VirtualHost,
            name=name,
            domains=st.lists(name, min_size=1, max_size=2).map(tuple),
            routes=st.lists(route, max_size=2).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
)
cluster = st.builds(
    Cluster,
    name=name,
    endpoints=st.lists(
        st.builds(
            Endpoint,
            address=address,
            weight=st.integers(1, 100),
            labels=st.dictionaries(token, text, max_size=2),
        ),
        max_size=2,
    ).map(tuple),
    protocol=st.sampled_from(["http", "tcp"]),
    lb_policy=st.sampled_from(["round_robin", "least_request", "random"]),
    connection_pool=st.builds(
        ConnectionPool,
        max_connections=st.integers(1, 10_000),
        max_pending_requests=st.integers(0, 100),
        max_requests_per_connection=st.integers(0, 100),
        connect_timeout_ms=st.integers(1, 10_000),
    ),
    outlier_detection=st.none()
    | st.builds(
        OutlierDetection,
        consecutive_5xx=st.integers(1, 10),
        interval_ms=st.integers(1, 10**6),
        base_ejection_time_ms=st.integers(1, 10**6),
        max_ejection_percent=percent,
    ),
    tls=st.none()
    | st.builds(
        UpstreamTls,
        mode=st.sampled_from(["MUTUAL", "DISABLE"]),
        sni=st.none() | name,
        peer_spiffe_ids=st.lists(spiffe, max_size=2).map(tuple),
    ),
)
hashed_cluster = st.builds(
    lambda c, k: Cluster(c.name, c.endpoints, c.protocol, "consistent_hash", k),
    cluster,
    one_of_fields(HashKey, {}, {"header": token, "cookie": name, "source_ip": st.just(True)}),
)
snapshot = st.builds(
    Snapshot,
    identity=st.none()
    | st.builds(
        Identity,
        spiffe_id=st.none() | spiffe,
        certificate_pem=st.none()
        | st.just("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"),
    ),
    inbound=st.none() | inbound,
    outbound=st.none() | outbound,
    tcp=st.lists(st.builds(TcpListener, port=port, cluster=name), max_size=2).map(tuple),
    clusters=st.lists(cluster | hashed_cluster, max_size=3).map(tuple),
    telemetry=st.builds(
        Telemetry,
        tracing_sampling_percent=percent,
        access_log_sampling_percent=percent,
        stats_interval_seconds=st.floats(0.1, 3600),
    ),
    revision=st.none() | name,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(snapshot)
def test_normal_form_is_valid_and_a_fixed_point(snap: Snapshot) -> None:
    doc = snapshot_to_json(snap)
    VALIDATOR.validate(doc)
    back = parse_snapshot(doc)
    assert back == snap
    assert snapshot_to_json(back) == doc
    assert doc["version"] == compute_version(doc)
