"""Parsing, normal form, version, schema agreement, files."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from proxy_runtime.config import (
    Cluster,
    Endpoint,
    Outbound,
    Route,
    Snapshot,
    SnapshotError,
    VirtualHost,
    WeightedCluster,
    canonical_json,
    compute_version,
    parse_snapshot,
    snapshot_schema,
    snapshot_to_json,
    snapshot_version,
)
from proxy_runtime.config.files import (
    dump_snapshot_file,
    dumps_snapshot,
    load_snapshot_file,
    loads_snapshot,
)

VALIDATOR = jsonschema.Draft202012Validator(snapshot_schema())


def _shuffled(obj: Any, rng: random.Random) -> Any:
    """Same JSON value with every object's keys in a random order."""
    if isinstance(obj, dict):
        items = list(obj.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(obj, list):
        return [_shuffled(v, rng) for v in obj]
    return obj


def test_schema_is_valid_draft_2020_12() -> None:
    schema = snapshot_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_example_round_trips_exactly(example: dict[str, Any]) -> None:
    VALIDATOR.validate(example)
    snap = parse_snapshot(example)
    assert snapshot_to_json(snap) == example
    assert parse_snapshot(snapshot_to_json(snap)) == snap
    assert snapshot_version(snap) == example["version"] == compute_version(example)


def test_version_ignores_key_order(example: dict[str, Any]) -> None:
    rng = random.Random(7)
    for _ in range(5):
        shuffled = _shuffled(example, rng)
        assert compute_version(shuffled) == example["version"]
        assert parse_snapshot(shuffled) == parse_snapshot(example)


def test_canonical_json_form() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]}) == (
        '{"a":[1,{"c":null,"d":"é"}],"b":1}'.encode()
    )
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_version_changes_with_content_not_with_revision(example: dict[str, Any]) -> None:
    other = copy.deepcopy(example)
    other["revision"] = "another-commit"
    assert compute_version(other) == compute_version(example)
    parse_snapshot(other)  # the stored version still matches: revision is not hashed
    other["telemetry"]["tracingSamplingPercent"] = 2.0
    assert compute_version(other) != compute_version(example)


def test_tampered_version_is_refused(example: dict[str, Any]) -> None:
    example["outbound"]["port"] = 15002
    with pytest.raises(SnapshotError) as e:
        parse_snapshot(example)
    assert e.value.path == "version"
    assert "does not match the content" in str(e.value)


def test_version_is_optional_on_input(example: dict[str, Any]) -> None:
    version = example.pop("version")
    snap = parse_snapshot(example)
    assert snapshot_version(snap) == version


def test_minimal_snapshot_and_defaults() -> None:
    snap = parse_snapshot({})
    assert snap == Snapshot()
    out = snapshot_to_json(snap)
    assert out == {
        "version": compute_version({k: v for k, v in out.items() if k != "version"}),
        "telemetry": {
            "tracingSamplingPercent": 1.0,
            "accessLogSamplingPercent": 100.0,
            "statsIntervalSeconds": 1.0,
        },
    }


def test_not_normal_form_parses_to_same_model_but_hashes_as_sent() -> None:
    a = {"telemetry": {"tracingSamplingPercent": 5}}
    b = {"telemetry": {"tracingSamplingPercent": 5.0}}
    assert parse_snapshot(a) == parse_snapshot(b)
    assert compute_version(a) != compute_version(b)


def test_model_built_in_python_serializes() -> None:
    snap = Snapshot(
        outbound=Outbound(
            port=15001,
            virtual_hosts=(
                VirtualHost("a", ("a",), (Route(clusters=(WeightedCluster("c", 1),)),)),
            ),
        ),
        clusters=(Cluster("c", endpoints=(Endpoint("127.0.0.1:1", labels={"z": "1", "a": "2"}),)),),
        revision="r1",
    )
    doc = snapshot_to_json(snap)
    assert list(doc)[:2] == ["version", "revision"]
    assert list(doc["clusters"][0]["endpoints"][0]["labels"]) == ["a", "z"]  # sorted maps
    assert doc["outbound"]["virtualHosts"][0]["routes"][0] == {
        "match": {},
        "clusters": [{"cluster": "c", "weight": 1}],
    }
    VALIDATOR.validate(doc)
    assert parse_snapshot(doc) == snap


def test_policy_json_uses_istio_from_to(example: dict[str, Any]) -> None:
    snap = parse_snapshot(example)
    assert snap.inbound is not None
    rule = snap.inbound.policies[0].rules[0]
    assert rule.sources[0].principals == ("shop.example/ns/shop/sa/frontend",)
    assert rule.operations[0].ports == ("8080",)
    out = snapshot_to_json(snap)["inbound"]["policies"][0]["rules"][0]
    assert set(out) == {"from", "to", "when"}


# --- bad input: parser and schema must agree, and the parser names the place ---------------

BAD: list[tuple[str, Any, str, str]] = [
    # (description, mutation (path, value) applied to the example, expected path, message part)
    ("unknown top-level field", ("extra", 1), "extra", "unknown field"),
    (
        "unknown nested field",
        ("outbound.virtualHosts[0].routes[0].match.pth", {}),
        "outbound.virtualHosts[0].routes[0].match.pth",
        "unknown field",
    ),
    ("port out of range", ("outbound.port", 70000), "outbound.port", "out of range"),
    ("port is a string", ("outbound.port", "15001"), "outbound.port", "expected an integer"),
    ("port is a boolean", ("outbound.port", True), "outbound.port", "expected an integer"),
    (
        "bad protocol",
        ("inbound.listeners[0].protocol", "udp"),
        "inbound.listeners[0].protocol",
        "is not one of",
    ),
    (
        "bad mtls mode",
        ("inbound.listeners[0].mtlsMode", "strict"),
        "inbound.listeners[0].mtlsMode",
        "is not one of",
    ),
    (
        "bad local address",
        ("inbound.listeners[0].localAddress", "127.0.0.1"),
        "inbound.listeners[0].localAddress",
        "host:port",
    ),
    (
        "bad action",
        ("inbound.policies[0].action", "REJECT"),
        "inbound.policies[0].action",
        "is not one of",
    ),
    (
        "policy port not a number",
        ("inbound.policies[0].rules[0].to[0].operation.ports", ["http"]),
        "inbound.policies[0].rules[0].to[0].operation.ports[0]",
        "a port number",
    ),
    (
        "unsupported when key",
        ("inbound.policies[0].rules[0].when[0].key", "request.auth.claims[iss]"),
        "inbound.policies[0].rules[0].when[0].key",
        "supported condition key",
    ),
    (
        "when without values",
        ("inbound.policies[0].rules[0].when[0]", {"key": "source.ip"}),
        "inbound.policies[0].rules[0].when[0]",
        "needs values or notValues",
    ),
    (
        "source without the source wrapper",
        ("inbound.policies[0].rules[0].from[0]", {"principals": ["x"]}),
        "inbound.policies[0].rules[0].from[0].principals",
        "unknown field",
    ),
    (
        "two path kinds",
        ("outbound.virtualHosts[0].routes[0].match.path", {"prefix": "/a", "exact": "/a"}),
        "outbound.virtualHosts[0].routes[0].match.path",
        "exactly one of",
    ),
    (
        "path without slash",
        ("outbound.virtualHosts[0].routes[0].match.path", {"prefix": "api"}),
        "outbound.virtualHosts[0].routes[0].match.path.prefix",
        "must start with /",
    ),
    (
        "header match without kind",
        ("outbound.virtualHosts[0].routes[0].match.headers[0]", {"name": "x"}),
        "outbound.virtualHosts[0].routes[0].match.headers[0]",
        "exactly one of",
    ),
    (
        "CR LF in a header value set",
        ("outbound.virtualHosts[0].routes[0].requestHeaders.set.x-b", "a\r\nx-injected: 1"),
        "outbound.virtualHosts[0].routes[0].requestHeaders.set.x-b",
        "control character '\\r'",
    ),
    (
        "LF in a header value added",
        ("outbound.virtualHosts[0].routes[0].requestHeaders.add.x-a", "a\nx-injected: 1"),
        "outbound.virtualHosts[0].routes[0].requestHeaders.add.x-a",
        "control character '\\n'",
    ),
    (
        "NUL in a response header value",
        ("outbound.virtualHosts[0].routes[0].responseHeaders.set.x-served-by", "me\x00sh"),
        "outbound.virtualHosts[0].routes[0].responseHeaders.set.x-served-by",
        "control character '\\x00'",
    ),
    (
        "bad header name",
        ("outbound.virtualHosts[0].routes[0].match.headers[0].name", "x y"),
        "outbound.virtualHosts[0].routes[0].match.headers[0].name",
        "valid header name",
    ),
    (
        "route without clusters",
        ("outbound.virtualHosts[0].routes[1].clusters", []),
        "outbound.virtualHosts[0].routes[1].clusters",
        "at least 1",
    ),
    (
        "negative weight",
        ("outbound.virtualHosts[0].routes[0].clusters[0].weight", -1),
        "outbound.virtualHosts[0].routes[0].clusters[0].weight",
        "out of range",
    ),
    (
        "percent over 100",
        ("outbound.virtualHosts[0].routes[0].fault.abort.percent", 101),
        "outbound.virtualHosts[0].routes[0].fault.abort.percent",
        "out of range",
    ),
    (
        "mirror percent negative",
        ("outbound.virtualHosts[0].routes[0].mirror.percent", -0.5),
        "outbound.virtualHosts[0].routes[0].mirror.percent",
        "out of range",
    ),
    (
        "empty fault",
        ("outbound.virtualHosts[0].routes[0].fault", {}),
        "outbound.virtualHosts[0].routes[0].fault",
        "needs delay or abort",
    ),
    (
        "bad retryOn",
        ("outbound.virtualHosts[0].routes[0].retries.retryOn", ["5xx", "timeout"]),
        "outbound.virtualHosts[0].routes[0].retries.retryOn[1]",
        "is not one of",
    ),
    (
        "empty retryOn",
        ("outbound.virtualHosts[0].routes[0].retries.retryOn", []),
        "outbound.virtualHosts[0].routes[0].retries.retryOn",
        "at least 1",
    ),
    (
        "too many retries",
        ("outbound.virtualHosts[0].routes[0].retries.attempts", 11),
        "outbound.virtualHosts[0].routes[0].retries.attempts",
        "out of range",
    ),
    (
        "abort status",
        ("outbound.virtualHosts[0].routes[0].fault.abort.httpStatus", 99),
        "outbound.virtualHosts[0].routes[0].fault.abort.httpStatus",
        "out of range",
    ),
    (
        "virtual host without domains",
        ("outbound.virtualHosts[0].domains", []),
        "outbound.virtualHosts[0].domains",
        "at least 1",
    ),
    (
        "consistent_hash without key",
        ("clusters[0].lbPolicy", "consistent_hash"),
        "clusters[0].hashKey",
        "consistent_hash",
    ),
    (
        "hash key without consistent_hash",
        ("clusters[1].lbPolicy", "random"),
        "clusters[1].hashKey",
        "consistent_hash",
    ),
    ("bad lb policy", ("clusters[0].lbPolicy", "fastest"), "clusters[0].lbPolicy", "is not one of"),
    (
        "endpoint weight zero",
        ("clusters[0].endpoints[0].weight", 0),
        "clusters[0].endpoints[0].weight",
        "out of range",
    ),
    (
        "unbracketed IPv6 endpoint",
        ("clusters[0].endpoints[0].address", "::1:8080"),
        "clusters[0].endpoints[0].address",
        "host:port",
    ),
    (
        "label value not a string",
        ("clusters[0].endpoints[0].labels", {"v": 1}),
        "clusters[0].endpoints[0].labels.v",
        "expected a string",
    ),
    ("bad tls mode", ("clusters[0].tls.mode", "SIMPLE"), "clusters[0].tls.mode", "is not one of"),
    (
        "peer id not spiffe",
        ("clusters[0].tls.peerSpiffeIds", ["cart"]),
        "clusters[0].tls.peerSpiffeIds[0]",
        "spiffe://",
    ),
    (
        "identity spiffe id",
        ("identity.spiffeId", "shop.example/ns/shop/sa/x"),
        "identity.spiffeId",
        "spiffe://",
    ),
    (
        "pool limit zero",
        ("clusters[0].connectionPool.maxConnections", 0),
        "clusters[0].connectionPool.maxConnections",
        "out of range",
    ),
    (
        "stats interval",
        ("telemetry.statsIntervalSeconds", 0),
        "telemetry.statsIntervalSeconds",
        "out of range",
    ),
    ("empty service name", ("inbound.service", ""), "inbound.service", "must not be empty"),
    (
        "tcp listener missing cluster",
        ("tcp[0]", {"port": 1}),
        "tcp[0].cluster",
        "required field is missing",
    ),
    ("inbound not an object", ("inbound", []), "inbound", "expected an object"),
]


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:

    parts: list[str | int] = []
    for seg in dotted.split("."):
        m = re.fullmatch(r"([^\[]+)((?:\[\d+\])*)", seg)
        assert m, seg
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    cur: Any = doc
    for p in parts[:-1]:
        cur = cur[p]
    cur[parts[-1]] = value


@pytest.mark.parametrize(("what", "mutation", "path", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_snapshot(
    example: dict[str, Any], what: str, mutation: tuple[str, Any], path: str, message: str
) -> None:
    del example["version"]
    _set(example, *mutation)
    with pytest.raises(SnapshotError) as e:
        parse_snapshot(example)
    assert e.value.path == path, str(e.value)
    assert message in e.value.message, str(e.value)
    assert str(e.value).startswith(f"{path}: ")
    assert not VALIDATOR.is_valid(example), f"the shipped schema accepts it: {what}"


def test_header_name_with_a_final_newline_is_refused(example: dict[str, Any]) -> None:
    # A regex `$` matches before a final "\n": the parser matches names in full. (The schema's
    # `^...$` pattern cannot say this for Python's jsonschema; the parser is the proxy's word.)
    del example["version"]
    example["outbound"]["virtualHosts"][0]["routes"][0]["requestHeaders"]["set"] = {"x-b\n": "2"}
    with pytest.raises(SnapshotError, match="is not a valid header name"):
        parse_snapshot(example)


def test_tab_in_a_header_value_is_fine(example: dict[str, Any]) -> None:
    del example["version"]
    example["outbound"]["virtualHosts"][0]["routes"][0]["requestHeaders"]["set"] = {"x-b": "a\tb"}
    snap = parse_snapshot(example)
    assert VALIDATOR.is_valid(example)
    assert snap.outbound is not None


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(SnapshotError, match="expected an object, got an array"):
        parse_snapshot([])


# --- files --------------------------------------------------------------------------------


def test_file_round_trip(tmp_path: Path, example: dict[str, Any]) -> None:
    snap = parse_snapshot(example)
    target = tmp_path / "snap.json"
    dump_snapshot_file(snap, target)
    assert load_snapshot_file(target) == snap
    assert json.loads(target.read_text()) == example
    assert dumps_snapshot(snap) == target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]  # no temp file left


def test_loads_rejects_bad_json() -> None:
    with pytest.raises(SnapshotError, match="not valid JSON"):
        loads_snapshot("{")
    with pytest.raises(SnapshotError, match="duplicate key 'tcp'"):
        loads_snapshot('{"tcp": [], "tcp": []}')
    with pytest.raises(SnapshotError, match="NaN is not valid JSON"):
        loads_snapshot('{"telemetry": {"tracingSamplingPercent": NaN}}')


def _properties(node: Any, path: str = "") -> list[tuple[str, str, dict[str, Any]]]:
    """(path, field name, schema) of every object property in the schema."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            out.append((f"{path}.{name}", name, sub))
        for key, sub in node.items():
            if key in ("allOf", "if", "then", "else"):
                continue  # conditional constraints restate fields, they do not add any
            if key != "properties" or not isinstance(sub, dict):
                out.extend(_properties(sub, f"{path}/{key}"))
            else:
                for name, prop in sub.items():
                    out.extend(_properties(prop, f"{path}.{name}"))
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            out.extend(_properties(sub, f"{path}[{i}]"))
    return out


def test_every_field_is_described_in_schema_and_docs() -> None:
    schema = snapshot_schema()
    docs = (Path(__file__).parents[2] / "docs" / "proxy-snapshot.md").read_text("utf-8")
    props = _properties(schema)
    assert len(props) > 100
    for where, name, sub in props:
        if "$ref" in sub:
            target = schema["$defs"][sub["$ref"].rsplit("/", 1)[1]]
            assert target.get("description"), f"{where}: referenced definition has no description"
        elif name not in ("source", "operation"):  # the Istio wrappers of from/to entries
            assert sub.get("description"), f"{where}: no description"
        assert re.search(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])", docs), (
            f"{where}: field {name!r} not mentioned in docs/proxy-snapshot.md"
        )


def test_ints_in_float_fields_are_written_as_floats() -> None:
    from proxy_runtime.config import Mirror, Telemetry

    snap = Snapshot(telemetry=Telemetry(tracing_sampling_percent=5, stats_interval_seconds=2))
    doc = snapshot_to_json(snap)
    assert doc["telemetry"]["tracingSamplingPercent"] == 5.0
    assert isinstance(doc["telemetry"]["statsIntervalSeconds"], float)
    assert snapshot_to_json(parse_snapshot(doc)) == doc
    assert canonical_json(
        snapshot_to_json(Snapshot(telemetry=Telemetry(5.0, 100.0, 2.0)))
    ) == canonical_json(doc)
    assert Mirror("c", 10).percent == 10  # the model itself stores what it was given
