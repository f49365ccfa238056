"""The proxy's own config API: the JSON snapshot a proxy accepts, its model and schema, the
compiled form the data plane runs, the authorization evaluator and the route matcher.

Imports nothing of the project; pure except `files` (snapshot file read/write).
See docs/proxy-snapshot.md.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from .canonical import canonical_json, compute_version
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


def snapshot_schema() -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of a snapshot."""
    import json

    text = resources.files(__package__).joinpath("snapshot.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


__all__ = [
    "AuthorizationPolicy",
    "Cluster",
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
    "Snapshot",
    "SnapshotError",
    "Source",
    "TcpListener",
    "Telemetry",
    "UpstreamTls",
    "VirtualHost",
    "WeightedCluster",
    "canonical_json",
    "compute_version",
    "parse_policy",
    "parse_snapshot",
    "policy_to_json",
    "snapshot_schema",
    "snapshot_to_json",
    "snapshot_version",
]
