"""The shipped JSON Schemas, the envelope checks, and MCD020 findings in plain words at the
offending field; and the fast pre-check agreeing with jsonschema."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from reconciler.language import schema_gen
from reconciler.language.findings import Location
from reconciler.language.loader import Document, load_yaml
from reconciler.language.schema import check_envelope, check_schema, fast_check, validator
from reconciler.language.schema_fast import compile_schema

SCHEMA_DIR = Path(schema_gen.__file__).parent / "schemas"
KINDS = list(schema_gen.SPECS)

# One document per kind using every field the language has (docs/config-language.md).
FULL = """\
apiVersion: meshcd.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec:
  trustDomain: shop.example
  rootNamespace: meshcd-system
  mtls: {mode: STRICT}
  authorization: {default: deny}
  telemetry: {tracingSamplingPercent: 1, accessLogSamplingPercent: 100}
  defaultRolloutPolicy: standard
---
apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {name: cart, namespace: shop, labels: {team: web, app.kubernetes.io/name: cart}}
spec:
  ports:
    - {name: http, number: 8080, protocol: http}
    - {name: db, number: 5432, protocol: tcp}
  subsets:
    - {name: v1, labels: {version: v1}}
  endpoints:
    - {address: "127.0.0.1:9101", labels: {version: v1}}
    - {address: "[::1]:9102"}
  identity: {serviceAccount: cart-sa}
  egress: [catalog, payments.shop]
---
apiVersion: meshcd.dev/v1alpha1
kind: Route
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  rules:
    - name: api-canary
      matches:
        - path: {prefix: /api}
          methods: [GET, HEAD]
          headers:
            - {name: x-canary, exact: "1"}
            - {name: x-debug, present: true}
          queryParams:
            - {name: debug, present: true}
            - {name: v, regex: "^[0-9]+$"}
      destinations:
        - {service: cart, subset: v1, port: 8080, weight: 90}
        - {service: cart.shop, subset: v2, port: 8080, weight: 10}
      timeout: 3s
      retries: {attempts: 2, perTryTimeout: 1s, retryOn: [5xx, connect-failure]}
      fault:
        delay: {fixed: 100ms, percent: 5}
        abort: {httpStatus: 503, percent: 1}
      mirror: {service: cart, subset: v2, port: 8080, percent: 10}
      headers:
        request: {add: {x-a: "1"}, set: {x-b: "2"}, remove: [x-c]}
        response: {add: {}, set: {}, remove: []}
    - destinations: [{service: cart}]
---
apiVersion: meshcd.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: cart, namespace: shop}
spec:
  service: cart
  loadBalancer: {type: consistent_hash, hashOn: {header: x-user}}
  connectionPool: {maxConnections: 100, maxPendingRequests: 100, maxRequestsPerConnection: 0,
                   connectTimeout: 1s}
  outlierDetection: {consecutive5xx: 5, interval: 10s, baseEjectionTime: 30s,
                     maxEjectionPercent: 50}
  mtls: {mode: PERMISSIVE}
  subsets:
    - {name: v2, connectionPool: {maxConnections: 10}, loadBalancer: {type: random}}
---
apiVersion: meshcd.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: payments-allow-checkout, namespace: shop}
spec:
  selector: {services: [payments]}
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["shop.example/ns/shop/sa/checkout"]
            notPrincipals: ["*/sa/evil"]
            namespaces: [shop]
            notNamespaces: [test]
            ipBlocks: [10.0.0.0/8]
            notIpBlocks: [10.1.0.0/16]
      to:
        - operation:
            hosts: [payments]
            notHosts: [x]
            ports: ["8080"]
            notPorts: ["9090"]
            methods: [POST]
            notMethods: [DELETE]
            paths: ["/charge*"]
            notPaths: ["/admin*"]
      when:
        - {key: "request.headers[x-env]", values: [prod], notValues: [test]}
---
apiVersion: meshcd.dev/v1alpha1
kind: RolloutPolicy
metadata: {name: standard, namespace: meshcd-system}
spec:
  services: [cart.shop, checkout.shop]
  stages:
    - {count: 1, bake: 30s}
    - {percent: 10, bake: 30s}
    - {percent: 100, bake: 1m}
  analysis:
    maxErrorRatePercent: 1
    maxP99LatencyMs: 500
    maxIncreaseOverBaselinePercent: 50
    minRequests: 50
    confidence: 0.95
    onInconclusive: pause
  onFailure: rollback
  onNewCommit: restart
"""


def full_docs() -> list[Document]:
    docs, found = load_yaml("full.yaml", FULL.encode())
    assert found == []
    return docs


def doc_of(text: str) -> Document:
    docs, found = load_yaml("f.yaml", text.encode())
    assert found == []
    return docs[0]


def mcd020(text: str) -> list[tuple[str, int, int]]:
    d = doc_of(text)
    kind, env = check_envelope(d)
    assert env == [] and kind is not None
    return [(f.message, f.location.line, f.location.column) for f in check_schema(d, kind)]


def test_shipped_files_match_the_generator() -> None:
    for name, schema in schema_gen.all_schemas().items():
        shipped = (SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert shipped == schema_gen.render(schema), f"regenerate: python -m reconciler.language.schema_gen ({name})"
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(schema_gen.all_schemas())


@pytest.mark.parametrize("name", sorted(schema_gen.all_schemas()))
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def _walk(schema: Any) -> list[dict[str, Any]]:
    out = []
    if isinstance(schema, dict):
        out.append(schema)
        for v in schema.values():
            out.extend(_walk(v))
    elif isinstance(schema, list):
        for v in schema:
            out.extend(_walk(v))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_object_forbids_unknown_fields(kind: str) -> None:
    for sub in _walk(schema_gen.kind_schema(kind)):
        if sub.get("type") == "object" and "properties" in sub:
            assert sub.get("additionalProperties") is False, sub


def test_full_example_is_valid_for_every_kind() -> None:
    docs = full_docs()
    assert sorted(d.data["kind"] for d in docs) == sorted(KINDS)
    for d in docs:
        kind, env = check_envelope(d)
        assert env == []
        assert kind is not None
        assert check_schema(d, kind) == []
        assert list(validator(kind).iter_errors(d.data)) == []


def test_combined_schema_dispatches_on_kind() -> None:
    registry: Registry[Any] = Registry().with_resources(
        (name, Resource.from_contents(s))
        for name, s in schema_gen.all_schemas().items()
    )
    v = Draft202012Validator(schema_gen.combined_schema(), registry=registry)
    for d in full_docs():
        assert list(v.iter_errors(d.data)) == []
    bad = copy.deepcopy(full_docs()[1].data)
    bad["spec"]["ports"][0]["number"] = "x"
    assert list(v.iter_errors(bad))


# --- envelope ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "where"),
    [
        ("- a\n- b\n", "MCD010", (1, 1)),
        ("just text\n", "MCD010", (1, 1)),
        ("kind: Service\nmetadata: {name: a}\nspec: {}\n", "MCD011", (1, 1)),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n", "MCD011", (1, 13)),
        ("apiVersion: meshcd.dev/v1alpha1\nmetadata: {name: a}\n", "MCD012", (1, 1)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: Deployment\nmetadata: {name: a}\n", "MCD012", (2, 7)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: Service\nspec: {}\n", "MCD013", (1, 1)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: {namespace: x}\n", "MCD013", (3, 1)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: x\n", "MCD013", (3, 11)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: {name: Cart}\n", "MCD014", (3, 18)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: {name: a, namespace: -x}\n",
         "MCD014", (3, 32)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata:\n  name: " + "a" * 64 + "\n",
         "MCD014", (4, 9)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: {name: 42}\n", "MCD014", (3, 18)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: [Service]\nmetadata: {name: a}\n", "MCD012", (2, 7)),
        ("apiVersion: meshcd.dev/v1alpha1\nkind: {a: 1}\nmetadata: {name: a}\n", "MCD012", (2, 7)),
        ("apiVersion: [1]\nkind: Mesh\nmetadata: {name: a}\n", "MCD011", (1, 13)),
    ],
)
def test_envelope_codes(text: str, code: str, where: tuple[int, int]) -> None:
    _, found = check_envelope(doc_of(text))
    assert [(f.code, f.location.line, f.location.column) for f in found] == [(code, *where)]


def test_envelope_errors_are_not_repeated_as_schema_errors() -> None:
    d = doc_of("apiVersion: v9\nkind: Service\nmetadata: {name: Cart}\nspec: {ports: [{name: a, number: 1}]}\n")
    _, env = check_envelope(d)
    assert sorted(f.code for f in env) == ["MCD011", "MCD014"]
    assert check_schema(d, "Service") == []


# --- MCD020 messages and places ---------------------------------------------------------------

ROUTE_HEAD = "apiVersion: meshcd.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec:\n"


def test_nested_value_error_names_path_and_points_at_value() -> None:
    text = ROUTE_HEAD + (
        "  host: cart\n"
        "  rules:\n"
        "    - destinations:\n"
        "        - {service: cart, weight: 100}\n"
        "        - service: cart\n"
        "          weight: -5\n"
    )
    assert mcd020(text) == [
        ("spec.rules[0].destinations[1].weight: -5 is less than the minimum of 0", 10, 19)
    ]


def test_unknown_field_points_at_the_key_and_lists_allowed() -> None:
    text = ROUTE_HEAD + "  host: cart\n  rules:\n    - destinations: [{service: cart}]\n      timout: 3s\n"
    [(msg, line, col)] = mcd020(text)
    assert msg.startswith("spec.rules[0].timout: unknown field 'timout' (allowed here: ")
    assert "timeout" in msg
    assert (line, col) == (8, 7)


def test_all_errors_of_a_document_in_order() -> None:
    text = ROUTE_HEAD + (
        "  host: Not_A_Ref\n"
        "  rules:\n"
        "    - destinations: []\n"
        "      timeout: soon\n"
        "      retries: {attempts: 2, retryOn: [sometimes]}\n"
        "  extra: 1\n"
    )
    found = mcd020(text)
    assert [(line, col) for _, line, col in found] == sorted((line, col) for _, line, col in found)
    messages = [m for m, _, _ in found]
    assert messages == [
        "spec.host: 'Not_A_Ref' must be a service reference: name or name.namespace (DNS-1123 labels)",
        "spec.rules[0].destinations: needs at least 1 item, has 0",
        "spec.rules[0].timeout: 'soon' must be a duration: a number and a unit ms, s, m or h "
        "(250ms, 1.5s, 2m)",
        "spec.rules[0].retries.retryOn[0]: 'sometimes' is not one of: 5xx, gateway-error, "
        "connect-failure, reset, retriable-4xx",
        "spec.extra: unknown field 'extra' (allowed here: host, rules)",
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("  ports: [{name: http, number: '8080'}]\n",
         "spec.ports[0].number: '8080' must be an integer, not a string"),
        ("  ports: [{name: http, number: 70000}]\n",
         "spec.ports[0].number: 70000 is greater than the maximum of 65535"),
        ("  ports: [{name: http, number: 80, protocol: udp}]\n",
         "spec.ports[0].protocol: 'udp' is not one of: http, tcp"),
        ("  ports: [{number: 80}]\n", "spec.ports[0]: missing required field 'name'"),
        ("  ports: []\n", "spec.ports: needs at least 1 item, has 0"),
        ("  ports: {http: 80}\n", 'spec.ports: {"http": 80} must be a list, not a mapping'),
        ("  {}\n", "spec: missing required field 'ports'"),
    ],
)
def test_service_messages(spec: str, expected: str) -> None:
    text = "apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: {name: s}\nspec:\n" + spec
    assert [m for m, _, _ in mcd020(text)] == [expected]


def test_exactly_one_of_reads_plainly() -> None:
    text = ROUTE_HEAD + (
        "  host: cart\n  rules:\n    - matches: [{path: {exact: /a, prefix: /b}}]\n"
        "      destinations: [{service: cart}]\n"
    )
    assert [m for m, _, _ in mcd020(text)] == [
        "spec.rules[0].matches[0].path: needs exactly one of exact, prefix, regex"
    ]


def test_hash_on_needs_consistent_hash() -> None:
    head = "apiVersion: meshcd.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: t}\nspec:\n  service: a\n"
    assert [m for m, _, _ in mcd020(head + "  loadBalancer: {type: random, hashOn: {cookie: c}}\n")] == [
        "spec.loadBalancer: hashOn is only allowed with type consistent_hash"
    ]
    assert [m for m, _, _ in mcd020(head + "  loadBalancer: {type: consistent_hash}\n")] == [
        "spec.loadBalancer: missing required field 'hashOn'"
    ]


def test_exclusive_bounds_read_plainly() -> None:
    text = ("apiVersion: meshcd.dev/v1alpha1\nkind: RolloutPolicy\nmetadata: {name: r}\nspec:\n"
            "  stages: [{percent: 0, bake: 1s}]\n  analysis: {confidence: 1}\n")
    assert [m for m, _, _ in mcd020(text)] == [
        "spec.stages[0].percent: 0 must be greater than 0",
        "spec.analysis.confidence: 1 must be less than 1",
    ]


def test_missing_spec_is_reported() -> None:
    text = "apiVersion: meshcd.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\n"
    assert mcd020(text) == [("(document): missing required field 'spec'", 1, 1)]


def test_long_values_are_shortened_in_messages() -> None:
    text = "apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: '" + "x" * 500 + "'\n"
    [(msg, _, _)] = mcd020(text)
    assert len(msg) < 150 and "..." in msg


# --- the fast pre-check agrees with jsonschema ------------------------------------------------


def _mutations(value: Any, rng: random.Random) -> Any:
    """One random change somewhere in a JSON value."""
    value = copy.deepcopy(value)
    paths: list[tuple[Any, Any]] = []

    def collect(v: Any) -> None:
        if isinstance(v, dict):
            for k in list(v):
                paths.append((v, k))
                collect(v[k])
        elif isinstance(v, list):
            for i in range(len(v)):
                paths.append((v, i))
                collect(v[i])

    collect(value)
    parent, key = rng.choice(paths)
    choice = rng.randrange(9)
    replacements: list[Any] = [
        None, True, 0, -1, 1.5, 101, "", "X", "0.5s", "ten", [], {}, ["a"], {"x": 1}, 70000,
        "a.b", "UPPER", "100ms",
    ]
    if choice == 0 and isinstance(parent, dict):
        del parent[key]
    elif choice == 1 and isinstance(parent, dict):
        parent[key + "x"] = parent[key]
    elif choice == 2 and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    elif choice == 3 and isinstance(parent, list):
        parent.clear()
    else:
        parent[key] = rng.choice(replacements)
    return value


@pytest.mark.parametrize("seed", range(4))
def test_fast_check_agrees_with_jsonschema_on_mutations(seed: int) -> None:
    rng = random.Random(seed)
    docs = full_docs()
    disagreements = []
    for _ in range(300):
        d = rng.choice(docs)
        kind = d.data["kind"]
        mutated = _mutations(d.data, rng)
        fast = fast_check(kind)(mutated)
        slow = validator(kind).is_valid(mutated)
        if fast != slow:
            disagreements.append((kind, mutated))
    assert disagreements == []


def test_fast_check_agrees_on_the_example_repo() -> None:
    root = Path(__file__).resolve().parents[2] / "repo_layout_example"
    for path in sorted(root.rglob("*.yaml")):
        for d in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(d, dict) and d.get("kind") in KINDS:
                assert fast_check(d["kind"])(d) == validator(d["kind"]).is_valid(d), path


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "integer"}, [1, 1.0, -3], [True, 1.5, "1", None]),
        ({"type": "number"}, [1, 1.5], [False, "1"]),
        ({"enum": [1, "a"]}, [1, 1.0, "a"], [True, "b"]),
        ({"const": True}, [True], [1, "true"]),
        ({"uniqueItems": True}, [[1, 2], [1, True]], [[1, 1.0], ["a", "a"]]),
        ({"type": "string", "pattern": "^a", "maxLength": 3}, ["a", "abc"], ["b", "abcd", 1]),
        ({"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, [{"a": 1}, {"b": 2}], [{"a": 1, "b": 2}, {}, 5]),
        ({"if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": {"not": {"required": ["b"]}}},
         [{"a": 1, "b": 1}, {}], [{"a": 1}, {"b": 1}]),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
         [{}, {"a": "x"}], [{"b": 1}, {"a": 1}, []]),
        ({"propertyNames": {"minLength": 2}}, [{"ab": 1}], [{"a": 1}]),
        ({"$defs": {"x": {"minimum": 3}}, "items": {"$ref": "#/$defs/x"}, "minItems": 1}, [[3, 4]], [[], [2]]),
    ],
)
def test_fast_check_keywords(schema: dict[str, Any], good: list[Any], bad: list[Any]) -> None:
    check = compile_schema(schema)
    slow = Draft202012Validator(schema)
    for v in good:
        assert check(v) and slow.is_valid(v), v
    for v in bad:
        assert not check(v) and not slow.is_valid(v), v


def test_fast_check_refuses_unknown_keywords() -> None:
    with pytest.raises(ValueError, match="unsupported schema keyword"):
        compile_schema({"format": "ipv4"})


def test_finding_location_type() -> None:
    d = doc_of(ROUTE_HEAD + "  host: cart\n  rules: x\n")
    [f] = check_schema(d, "Route")
    assert f.location == Location("f.yaml", 6, 10)
    assert f.code == "MCD020"


def _doc_examples() -> list[tuple[str, str]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "config-language.md").read_text(encoding="utf-8")
    blocks = text.split("```yaml\n")[1:]
    out = []
    for block in blocks:
        body = block.split("```", 1)[0]
        if "spec: {...}" in body or "yaml-language-server" in body:
            continue  # the envelope sketch and the editor-comment snippet
        out.append((body.splitlines()[0], body))
    return out


@pytest.mark.parametrize(("first_line", "body"), _doc_examples())
def test_language_doc_examples_pass_the_schema(first_line: str, body: str) -> None:
    """Every kind's example in docs/config-language.md is valid against the shipped schema."""
    data = yaml.safe_load(body)
    data.setdefault("apiVersion", "meshcd.dev/v1alpha1")
    text = yaml.safe_dump(data)
    d = doc_of(text)
    kind, env = check_envelope(d)
    assert env == [] and kind is not None
    assert [f.message for f in check_schema(d, kind)] == []


def test_language_doc_has_an_example_of_every_kind() -> None:
    kinds = {yaml.safe_load(body)["kind"] for _, body in _doc_examples()}
    assert kinds == set(KINDS)
