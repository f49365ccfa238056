"""Table-driven authorization conformance: the cases in authz_cases.yaml are the documentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from proxy_runtime.config import (
    AuthzRequest,
    RuleRef,
    compile_policies,
    evaluate,
    is_allowed,
    parse_policy,
    snapshot_schema,
)

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "authz_cases.yaml").read_text("utf-8")
)

_REQUEST_KEYS = {
    "principal": "principal",
    "source_ip": "source_ip",
    "remote_ip": "remote_ip",
    "destination_ip": "destination_ip",
    "port": "destination_port",
    "host": "host",
    "method": "method",
    "path": "path",
    "headers": "headers",
    "sni": "sni",
    "tcp": "is_tcp",
}


def _policy_validator() -> jsonschema.Draft202012Validator:
    schema = snapshot_schema()
    sub = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/policy"}
    return jsonschema.Draft202012Validator(sub)


POLICY_SCHEMA = _policy_validator()


def test_suite_is_large_enough() -> None:
    assert len(CASES) >= 45
    assert len({c["name"] for c in CASES}) == len(CASES), "case names must be unique"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_authorization_case(case: dict[str, Any]) -> None:
    raw_policies = [{"name": f"ns/p{i}", **p} for i, p in enumerate(case["policies"])]
    for p in raw_policies:
        POLICY_SCHEMA.validate(p)  # the cases are valid snapshot policies
    policies = [parse_policy(p, f"policies[{i}]") for i, p in enumerate(raw_policies)]
    compiled = compile_policies(policies, default_deny=case.get("defaultDeny", False))
    unknown = set(case["request"]) - set(_REQUEST_KEYS)
    assert not unknown, f"unknown request keys {unknown}"
    req = AuthzRequest(**{_REQUEST_KEYS[k]: v for k, v in case["request"].items()})

    decision = evaluate(compiled, req)

    assert decision.allowed is (case["expect"] == "allow"), decision
    assert is_allowed(compiled, req) is decision.allowed
    if "reason" in case:
        assert decision.reason == case["reason"]
    if "policy" in case:
        assert decision.policy == case["policy"]
    if "rule" in case:
        assert decision.rule == case["rule"]
    if "audit" in case:
        assert decision.audit == tuple(RuleRef(p, r) for p, r in case["audit"])
