"""What every exporter shares: the result type, warnings, deterministic YAML, and the
conventions that tie meshcd names to Kubernetes objects."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.language import model as sm

# meshcd selects workloads by service; Kubernetes meshes select pods by label. The exporters
# assume the usual convention: a service's pods carry `app: <service name>`.
APP_LABEL = "app"


@dataclass(frozen=True, slots=True, order=True)
class ExportWarning:
    """Something the target format cannot express. `resource` names what it came from
    (`Route shop/cart`, `proxy cart.shop-0`); `message` starts with the field's path."""

    resource: str
    message: str

    def __str__(self) -> str:
        return f"{self.resource}: {self.message}"


@dataclass
class Export:
    """An exporter's output: file path (relative, `/`-separated) -> text, and warnings."""

    files: dict[str, str] = field(default_factory=dict)
    warnings: list[ExportWarning] = field(default_factory=list)

    def warn(self, resource: str, message: str) -> None:
        w = ExportWarning(resource, message)
        if w not in self.warnings:
            self.warnings.append(w)

    def add(self, path: str, text: str) -> None:
        if path in self.files:
            raise ValueError(f"two exported objects would both be {path}")
        self.files[path] = text

    def sorted(self) -> Export:
        """Files in path order, warnings sorted: the same input gives the same output."""
        return Export(dict(sorted(self.files.items())), sorted(self.warnings))


def res_name(r: sm.Resource) -> str:
    """`Route shop/cart`: how a warning names a resource of the config repo."""
    return f"{r.kind} {r.namespace}/{r.name}"


class _Dumper(yaml.SafeDumper):
    """Block style, insertion order, no anchors/aliases (shared objects written out)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(*docs: Any) -> str:
    """One or more documents as YAML, `---` between them, keys in the order given."""
    return yaml.dump_all(
        list(docs), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
        allow_unicode=True, width=100, explicit_start=len(docs) > 1,
    )


def k8s(api_version: str, kind: str, name: str, namespace: str | None, spec: Mapping[str, Any],
        labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = {"app.kubernetes.io/managed-by": "meshcd", **(labels or {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": dict(spec)}


def fqdn(ref: sm.ServiceRef) -> str:
    return f"{ref.name}.{ref.namespace}.svc.cluster.local"


def duration(seconds: float) -> str:
    """Kubernetes/Istio/Gateway-API style durations: `3s`, `250ms`, `1.5s` -> `1500ms`."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


_DNS_BAD = re.compile(r"[^a-z0-9.-]+")
MAX_NAME = 253  # a DNS-1123 subdomain: what Kubernetes allows for custom resources


def k8s_name(*parts: str) -> str:
    """An object name made of meshcd names joined by `.`. meshcd names are DNS labels (no
    dots), so two different part lists never give the same name; a name too long for
    Kubernetes is cut and ends in a hash of the whole."""
    text = _DNS_BAD.sub("-", ".".join(p for p in parts if p).lower()).strip("-.")
    if len(text) > MAX_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        text = text[: MAX_NAME - 11].rstrip("-.") + "-" + digest
    return text or "x"


def file_name(namespace: str | None, kind: str, name: str) -> str:
    """`<namespace>/<kind>-<name>.yaml` (cluster-wide objects under `_cluster/`)."""
    return f"{namespace or '_cluster'}/{kind.lower()}-{name}.yaml"


def unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in items:
        seen.setdefault(i, None)
    return list(seen)


__all__ = [
    "APP_LABEL",
    "Export",
    "ExportWarning",
    "dump_yaml",
    "duration",
    "file_name",
    "fqdn",
    "k8s",
    "k8s_name",
    "res_name",
    "unique",
]
