"""The proxy's own config API: the JSON snapshot a proxy accepts, its model and schema, the
compiled form the data plane runs, the authorization evaluator and the route matcher.

Imports nothing of the project; pure except `files` (snapshot file read/write).
See docs/proxy-snapshot.md.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from .authz import (
    AuthzDecision,
    AuthzRequest,
    CompiledPolicies,
    RuleRef,
    compile_policies,
    evaluate,
    is_allowed,
)
from .canonical import canonical_json, compute_version
from .compile import (
    CompiledCluster,
    CompiledConfig,
    CompiledEndpoint,
    CompiledInbound,
    CompiledInboundListener,
    compile_snapshot,
    load_config,
)
from .errors import SnapshotError
from .model import (
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
)
from .parse import parse_policy, parse_snapshot, policy_to_json, snapshot_to_json, snapshot_version
from .routing import (
    CompiledOutbound,
    CompiledRoute,
    CompiledVirtualHost,
    choose_cluster,
    find_virtual_host,
    select_route,
)


def snapshot_schema() -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of a snapshot."""
    import json

    text = resources.files(__package__).joinpath("snapshot.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


__all__ = [
    "AuthorizationPolicy",
    "AuthzDecision",
    "AuthzRequest",
    "Cluster",
    "CompiledCluster",
    "CompiledConfig",
    "CompiledEndpoint",
    "CompiledInbound",
    "CompiledInboundListener",
    "CompiledOutbound",
    "CompiledPolicies",
    "CompiledRoute",
    "CompiledVirtualHost",
    "Condition",
    "ConnectionPool",
    "Endpoint",
    "Fault",
    "FaultAbort",
    "FaultDelay",
    "HashKey",
    "HeaderEdits",
    "HeaderMatch",
    "Identity",
    "Inbound",
    "InboundListener",
    "Mirror",
    "Operation",
    "Outbound",
    "OutlierDetection",
    "PathMatch",
    "QueryParamMatch",
    "RetryPolicy",
    "Route",
    "RouteMatch",
    "Rule",
    "RuleRef",
    "Snapshot",
    "SnapshotError",
    "Source",
    "TcpListener",
    "Telemetry",
    "UpstreamTls",
    "VirtualHost",
    "WeightedCluster",
    "canonical_json",
    "choose_cluster",
    "compile_policies",
    "compile_snapshot",
    "compute_version",
    "evaluate",
    "find_virtual_host",
    "is_allowed",
    "load_config",
    "parse_policy",
    "parse_snapshot",
    "policy_to_json",
    "select_route",
    "snapshot_schema",
    "snapshot_to_json",
    "snapshot_version",
]
