"""The source of the shipped JSON Schemas (reconciler/language/schemas/*.json).

The schemas are written here once, with shared pieces, and emitted as one Draft 2020-12 file
per kind plus `meshcd.json`, which picks the right one by `kind` (for editors, where one file
may hold several kinds). Regenerate after a change with:

    python -m reconciler.language.schema_gen

(tests/spec/test_schema.py fails when the files and this module disagree.)

`errorMessage` is an annotation (ignored by validators, shown by VS Code) that
reconciler.language.schema also uses as the message for errors of the subschema holding it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

API_VERSION = "meshcd.dev/v1alpha1"
SCHEMA_DIR = Path(__file__).parent / "schemas"
BASE_ID = "https://meshcd.dev/schemas/v1alpha1/"

Schema = dict[str, Any]

DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
SERVICE_REF = f"^{_LABEL}(\\.{_LABEL})?$"
DURATION = "^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$"
HEADER_NAME = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


def obj(props: Schema, required: list[str] | None = None, **extra: Any) -> Schema:
    s: Schema = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        s["required"] = required
    s.update(extra)
    return s


def arr(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def exactly_one(*names: str) -> Schema:
    return {
        "oneOf": [{"required": [n]} for n in names],
        "errorMessage": f"needs exactly one of {', '.join(names)}",
    }


def ref(name: str) -> Schema:
    return {"$ref": f"#/$defs/{name}"}


DEFS: Schema = {
    "dnsLabel": {
        "type": "string", "maxLength": 63, "pattern": DNS_LABEL,
        "errorMessage": "must be a DNS-1123 label: lowercase letters, digits and '-', "
                        "starting and ending with a letter or digit, at most 63 characters",
    },
    "serviceRef": {
        "type": "string", "maxLength": 127, "pattern": SERVICE_REF,
        "errorMessage": "must be a service reference: name or name.namespace (DNS-1123 labels)",
    },
    "duration": {
        "type": "string", "pattern": DURATION,
        "errorMessage": "must be a duration: a number and a unit ms, s, m or h (250ms, 1.5s, 2m)",
    },
    "percent": {"type": "number", "minimum": 0, "maximum": 100},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "labels": {
        "type": "object",
        "propertyNames": {"minLength": 1, "maxLength": 317},
        "additionalProperties": {"type": "string"},
    },
    "stringMap": {"type": "object", "additionalProperties": {"type": "string"}},
    "strings": arr({"type": "string", "minLength": 1}),
    "metadata": obj(
        {"name": ref("dnsLabel"), "namespace": ref("dnsLabel"), "labels": ref("labels")},
        ["name"],
    ),
    "mtls": obj({"mode": {"enum": ["STRICT", "PERMISSIVE", "DISABLE"]}}, ["mode"]),
}


def _string_match(*kinds: str, extra: Schema | None = None, name: bool = False) -> Schema:
    props: Schema = {k: {"type": "string"} for k in kinds}
    props.update(extra or {})
    if name:
        props = {"name": {"type": "string", "minLength": 1, "pattern": HEADER_NAME}, **props}
    return obj(props, ["name"] if name else None, **exactly_one(*[k for k in props if k != "name"]))


def _spec_mesh() -> Schema:
    return obj(
        {
            "trustDomain": {
                "type": "string", "maxLength": 253, "pattern": "^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$",
                "errorMessage": "must be a trust domain: lowercase letters, digits, '.', '-', '_'",
            },
            "rootNamespace": ref("dnsLabel"),
            "mtls": ref("mtls"),
            "authorization": obj({"default": {"enum": ["allow", "deny"]}}),
            "telemetry": obj(
                {"tracingSamplingPercent": ref("percent"), "accessLogSamplingPercent": ref("percent")}
            ),
            "defaultRolloutPolicy": ref("dnsLabel"),
            "outboundPortBase": ref("port"),
        },
        ["trustDomain"],
    )


def _spec_service() -> Schema:
    return obj(
        {
            "ports": arr(
                obj(
                    {"name": ref("dnsLabel"), "number": ref("port"),
                     "protocol": {"enum": ["http", "tcp"]}},
                    ["name", "number"],
                ),
                minItems=1,
            ),
            "subsets": arr(obj({"name": ref("dnsLabel"), "labels": ref("labels")}, ["name"])),
            "endpoints": arr(
                obj({"address": {"type": "string", "minLength": 1, "maxLength": 261},
                     "labels": ref("labels")}, ["address"])
            ),
            "identity": obj({"serviceAccount": ref("dnsLabel")}),
            "egress": arr(ref("serviceRef")),
        },
        ["ports"],
    )


def _destination(percent: bool) -> Schema:
    props: Schema = {"service": ref("serviceRef"), "subset": ref("dnsLabel"), "port": ref("port")}
    if percent:
        props["percent"] = ref("percent")
    else:
        props["weight"] = {"type": "integer", "minimum": 0, "maximum": 100}
    return obj(props, ["service"])


def _spec_route() -> Schema:
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"]
    header_ops = obj({"add": ref("stringMap"), "set": ref("stringMap"), "remove": ref("strings")})
    match = obj(
        {
            "path": _string_match("exact", "prefix", "regex"),
            "methods": arr({"enum": methods}, uniqueItems=True),
            "headers": arr(_string_match("exact", "prefix", "regex",
                                         extra={"present": {"const": True}}, name=True)),
            "queryParams": arr(_string_match("exact", "regex",
                                             extra={"present": {"const": True}}, name=True)),
        }
    )
    rule = obj(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 253},
            "matches": arr(match),
            "destinations": arr(_destination(percent=False), minItems=1),
            "timeout": ref("duration"),
            "retries": obj(
                {
                    "attempts": {"type": "integer", "minimum": 0, "maximum": 10},
                    "perTryTimeout": ref("duration"),
                    "retryOn": arr(
                        {"enum": ["5xx", "gateway-error", "connect-failure", "reset", "retriable-4xx"]},
                        uniqueItems=True,
                    ),
                },
                ["attempts"],
            ),
            "fault": obj(
                {
                    "delay": obj({"fixed": ref("duration"), "percent": ref("percent")}, ["fixed"]),
                    "abort": obj(
                        {"httpStatus": {"type": "integer", "minimum": 200, "maximum": 599},
                         "percent": ref("percent")},
                        ["httpStatus"],
                    ),
                }
            ),
            "mirror": _destination(percent=True),
            "headers": obj({"request": header_ops, "response": header_ops}),
        },
        ["destinations"],
    )
    return obj({"host": ref("serviceRef"), "rules": arr(rule, minItems=1)}, ["host", "rules"])


def _policy_blocks() -> Schema:
    return {
        "loadBalancer": obj(
            {
                "type": {"enum": ["round_robin", "least_request", "random", "consistent_hash"]},
                "hashOn": obj(
                    {"header": {"type": "string", "minLength": 1, "pattern": HEADER_NAME},
                     "cookie": {"type": "string", "minLength": 1},
                     "sourceIP": {"const": True}},
                    **exactly_one("header", "cookie", "sourceIP"),
                ),
            },
            allOf=[{
                "if": {"properties": {"type": {"const": "consistent_hash"}}, "required": ["type"]},
                "then": {"required": ["hashOn"]},
                "else": {"not": {"required": ["hashOn"]},
                         "errorMessage": "hashOn is only allowed with type consistent_hash"},
            }],
        ),
        "connectionPool": obj(
            {
                "maxConnections": {"type": "integer", "minimum": 1},
                "maxPendingRequests": {"type": "integer", "minimum": 1},
                "maxRequestsPerConnection": {"type": "integer", "minimum": 0},
                "connectTimeout": ref("duration"),
            }
        ),
        "outlierDetection": obj(
            {
                "consecutive5xx": {"type": "integer", "minimum": 1},
                "interval": ref("duration"),
                "baseEjectionTime": ref("duration"),
                "maxEjectionPercent": ref("percent"),
            }
        ),
        "mtls": ref("mtls"),
    }


def _spec_traffic_policy() -> Schema:
    blocks = _policy_blocks()
    return obj(
        {
            "service": ref("serviceRef"),
            **blocks,
            "subsets": arr(obj({"name": ref("dnsLabel"), **_policy_blocks()}, ["name"])),
        },
        ["service"],
    )


def _spec_authorization_policy() -> Schema:
    def pair(*names: str) -> Schema:
        out: Schema = {}
        for n in names:
            out[n] = ref("strings")
            out["not" + n[0].upper() + n[1:]] = ref("strings")
        return out

    # 1-65535: the proxy refuses any other port in a policy (issue 17 #6: what a proxy would
    # NACK, validation says first).
    port = ("^(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
            "|6553[0-5])$")
    ports = arr({"type": "string", "pattern": port,
                 "errorMessage": "must be a port number from 1 to 65535 written as a string, "
                                 "e.g. \"8080\""})
    operation = pair("hosts", "methods", "paths")
    operation.update({"ports": ports, "notPorts": ports})
    rule = obj(
        {
            "from": arr(obj({"source": obj(pair("principals", "namespaces", "ipBlocks"))},
                            ["source"])),
            "to": arr(obj({"operation": obj(operation)}, ["operation"])),
            "when": arr(obj(
                {"key": {"type": "string", "minLength": 1},
                 "values": ref("strings"), "notValues": ref("strings")},
                ["key"],
                anyOf=[{"required": ["values"]}, {"required": ["notValues"]}],
                errorMessage="a condition needs values, notValues or both",
            )),
        }
    )
    return obj(
        {
            "selector": obj({"services": arr(ref("serviceRef"))}),
            "action": {"enum": ["ALLOW", "DENY", "AUDIT"]},
            "rules": arr(rule),
        }
    )


def _spec_rollout_policy() -> Schema:
    return obj(
        {
            "services": arr(ref("serviceRef")),
            "stages": arr(
                obj(
                    {
                        "count": {"type": "integer", "minimum": 1},
                        "percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                        "bake": ref("duration"),
                    },
                    ["bake"],
                    oneOf=[{"required": ["count"]}, {"required": ["percent"]}],
                    errorMessage="a stage needs exactly one of count, percent",
                ),
                minItems=1,
            ),
            "analysis": obj(
                {
                    "maxErrorRatePercent": ref("percent"),
                    "maxP99LatencyMs": {"type": "number", "exclusiveMinimum": 0},
                    "maxIncreaseOverBaselinePercent": {"type": "number", "minimum": 0},
                    "minRequests": {"type": "integer", "minimum": 0},
                    "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                    "onInconclusive": {"enum": ["pause", "extend", "pass"]},
                }
            ),
            "onFailure": {"enum": ["rollback", "pause"]},
            "onNewCommit": {"enum": ["restart", "finish-then-next"]},
        },
        ["stages"],
    )


SPECS = {
    "Mesh": _spec_mesh,
    "Service": _spec_service,
    "Route": _spec_route,
    "TrafficPolicy": _spec_traffic_policy,
    "AuthorizationPolicy": _spec_authorization_policy,
    "RolloutPolicy": _spec_rollout_policy,
}


def file_name(kind: str) -> str:
    return f"{kind.lower()}.json"


def kind_schema(kind: str) -> Schema:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE_ID + file_name(kind),
        "title": f"meshcd {kind} ({API_VERSION})",
        "description": f"A meshcd {kind} document. See docs/config-language.md.",
        **obj(
            {
                "apiVersion": {"const": API_VERSION},
                "kind": {"const": kind},
                "metadata": ref("metadata"),
                "spec": SPECS[kind](),
            },
            ["apiVersion", "kind", "metadata", "spec"],
        ),
        "$defs": DEFS,
    }


def combined_schema() -> Schema:
    """For editors: any meshcd document, checked against its kind's schema."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        # No $id: editors resolve the relative $refs below against wherever this file is.
        "title": f"meshcd document ({API_VERSION})",
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": list(SPECS)}},
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"$ref": file_name(kind)},
            }
            for kind in SPECS
        ],
    }


def all_schemas() -> dict[str, Schema]:
    """file name -> schema."""
    out = {file_name(k): kind_schema(k) for k in SPECS}
    out["meshcd.json"] = combined_schema()
    return out


def render(schema: Schema) -> str:
    return json.dumps(schema, indent=2) + "\n"


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, schema in all_schemas().items():
        (SCHEMA_DIR / name).write_text(render(schema), encoding="utf-8")
        print(f"wrote {SCHEMA_DIR / name}")


if __name__ == "__main__":
    main()
