"""The meshcd config language: loader, JSON Schemas, typed model, validation.

    from reconciler.spec import DirectorySource, GitTreeSource, validate
    result = validate(DirectorySource("repo_layout_example"))
    for f in result.findings: print(f)
    model = result.model          # ConfigModel

The names below are the public surface; submodules are free to change behind them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reconciler.spec.findings import Finding, Location, Severity
from reconciler.spec.model import (
    API_VERSION,
    DEFAULT_NAMESPACE,
    Analysis,
    AuthorizationPolicy,
    AuthorizationRule,
    AuthorizationSettings,
    Condition,
    ConfigModel,
    ConnectionPool,
    Destination,
    Endpoint,
    Fault,
    FaultAbort,
    FaultDelay,
    FrozenDict,
    HashOn,
    HeaderMatch,
    HeaderOps,
    HeaderPolicy,
    Identity,
    LoadBalancer,
    Match,
    Mesh,
    MeshModel,
    Mirror,
    MtlsSettings,
    OutlierDetection,
    PathMatch,
    Port,
    Positions,
    QueryParamMatch,
    Resource,
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
    Telemetry,
    TrafficPolicy,
    parse_duration,
    resolve_service_ref,
)

if TYPE_CHECKING:
    from reconciler.spec.loader import LoadLimits
    from reconciler.spec.sources import DirectorySource, GitTreeSource, SourceError
    from reconciler.spec.validate import (
        ValidateOptions,
        ValidationCache,
        ValidationResult,
        validate,
    )

# Loaded on first use, so that importing the model (as the checks and renderers do) does not
# pull in YAML, jsonschema and git.
_LAZY = {
    "validate": "reconciler.spec.validate",
    "ValidationResult": "reconciler.spec.validate",
    "ValidationCache": "reconciler.spec.validate",
    "ValidateOptions": "reconciler.spec.validate",
    "LoadLimits": "reconciler.spec.loader",
    "DirectorySource": "reconciler.spec.sources",
    "GitTreeSource": "reconciler.spec.sources",
    "SourceError": "reconciler.spec.sources",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reconciler.spec' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "API_VERSION",
    "DEFAULT_NAMESPACE",
    "Analysis",
    "AuthorizationPolicy",
    "AuthorizationRule",
    "AuthorizationSettings",
    "Condition",
    "ConfigModel",
    "ConnectionPool",
    "Destination",
    "DirectorySource",
    "Endpoint",
    "Fault",
    "FaultAbort",
    "FaultDelay",
    "Finding",
    "FrozenDict",
    "GitTreeSource",
    "HashOn",
    "HeaderMatch",
    "HeaderOps",
    "HeaderPolicy",
    "Identity",
    "LoadBalancer",
    "LoadLimits",
    "Location",
    "Match",
    "Mesh",
    "MeshModel",
    "Mirror",
    "MtlsSettings",
    "OutlierDetection",
    "PathMatch",
    "Port",
    "Positions",
    "QueryParamMatch",
    "Resource",
    "Retries",
    "RolloutPolicy",
    "Route",
    "RouteRule",
    "RuleFrom",
    "RuleOperation",
    "RuleSource",
    "RuleTo",
    "Selector",
    "Service",
    "ServiceRef",
    "Severity",
    "SourceError",
    "Stage",
    "Subset",
    "SubsetPolicy",
    "Telemetry",
    "TrafficPolicy",
    "ValidateOptions",
    "ValidationCache",
    "ValidationResult",
    "parse_duration",
    "resolve_service_ref",
    "validate",
]
