"""A synthetic config repo generator for benchmarks.

`generate(root, services=2000, routes=10000, policies=5000, seed=0)` writes a realistic,
valid (validate-clean) meshcd repo under `root`:

- one Mesh (STRICT mTLS, default-deny) and two RolloutPolicies;
- `services` Services spread over namespaces of ~100, five per file, each with an http port
  (some also a tcp port), v1/v2 subsets, two static endpoints on a loopback address of its
  own (127.x.y.z:10000 and :10002), an egress list;
- one Route per service host (two Routes for one host would be an error), with the route
  *rules* totalling `routes` (10,000 rules over 2,000 hosts = five rules a host): a 90/10
  canary, header and regex matches, retries on reads, timeouts, a catch-all last rule;
- `policies` AuthorizationPolicies: at least one ALLOW per service (so nothing is unreachable
  under default-deny), principals, methods, paths, ports; every tenth a DENY;
- a TrafficPolicy for every fourth service.

The output is deterministic for a given seed. `python bench/synth.py DIR` runs it from the shell.
#4's render benchmark reuses it: `from bench.synth import generate`.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from pathlib import Path

API = "apiVersion: meshcd.dev/v1alpha1"
TRUST_DOMAIN = "synth.example"
NAMESPACE_WORDS = [
    "shop", "search", "payments", "identity", "media", "ads", "ledger", "shipping",
    "catalog", "reviews", "mail", "chat", "billing", "maps", "risk", "growth",
    "support", "infra", "data", "ml", "video", "notify", "ops", "partner",
]
SERVICE_WORDS = [
    "api", "gateway", "store", "index", "worker", "cache", "auth", "profile", "orders",
    "stock", "pricing", "quotes", "events", "feed", "rank", "sessions", "tokens", "audit",
    "export", "import", "sync", "render", "thumbs", "upload", "ledger", "invoice",
]
PER_SERVICE_FILE = 5
PER_ROUTE_FILE = 5
PER_POLICY_FILE = 10
PER_TRAFFIC_FILE = 10


@dataclass
class _Svc:
    name: str
    ns: str
    tcp: bool
    callers: list[_Svc] = field(default_factory=list)  # who may call it (one ALLOW each)
    egress: set[str] = field(default_factory=set)

    @property
    def ref(self) -> str:
        return f"{self.name}.{self.ns}"


def _namespaces(services: int) -> list[str]:
    count = max(1, (services + 99) // 100)
    return [
        NAMESPACE_WORDS[i % len(NAMESPACE_WORDS)]
        + ("" if i < len(NAMESPACE_WORDS) else f"-{i // len(NAMESPACE_WORDS)}")
        for i in range(count)
    ]


def _build_graph(rng: random.Random, services: int, policies: int) -> list[_Svc]:
    namespaces = _namespaces(services)
    svcs = [
        _Svc(
            name=f"{SERVICE_WORDS[i % len(SERVICE_WORDS)]}-{i:05d}",
            ns=namespaces[i % len(namespaces)],
            tcp=(i % 10 == 9),
        )
        for i in range(services)
    ]
    by_ns: dict[str, list[_Svc]] = {}
    for s in svcs:
        by_ns.setdefault(s.ns, []).append(s)
    # One ALLOW per service first (nothing is left uncallable), then the rest at random,
    # mostly callers from the same namespace.
    for k in range(policies):
        callee = svcs[k % len(svcs)] if k < len(svcs) else rng.choice(svcs)
        pool = by_ns[callee.ns] if rng.random() < 0.8 else svcs
        caller = rng.choice(pool)
        if caller is callee and len(svcs) > 1:
            caller = svcs[(k + 1) % len(svcs)] if k < len(svcs) else svcs[(svcs.index(callee) + 1) % len(svcs)]
        callee.callers.append(caller)
        if caller is not callee:
            caller.egress.add(callee.ref)
    return svcs


def _service_doc(s: _Svc, i: int) -> str:
    # Service i's two endpoints on a loopback address of its own, ports spaced by 2 (a Service has
    # up to 2 ports): the static proxies' listeners never share a port (MCD132).
    host = f"127.{1 + i // 65536}.{(i // 256) % 256}.{i % 256}"
    ports = "    - {name: http, number: 8080, protocol: http}\n"
    if s.tcp:
        ports += "    - {name: db, number: 5432, protocol: tcp}\n"
    egress = ", ".join(sorted(s.egress))
    return (
        f"{API}\nkind: Service\nmetadata:\n  name: {s.name}\n  namespace: {s.ns}\n"
        f"  labels: {{team: {s.ns}, tier: backend}}\n"
        f"spec:\n  ports:\n{ports}"
        "  subsets:\n"
        "    - name: v1\n      labels: {version: v1}\n"
        "    - name: v2\n      labels: {version: v2}\n"
        "  endpoints:\n"
        f"    - address: {host}:10000\n      labels: {{version: v1}}\n"
        f"    - address: {host}:10002\n      labels: {{version: v2}}\n"
        f"  identity:\n    serviceAccount: {s.name}\n"
        f"  egress: [{egress}]\n"
    )


def _route_doc(rng: random.Random, s: _Svc, rules: int) -> str:
    out = [
        f"{API}\nkind: Route\nmetadata:\n  name: {s.name}\n  namespace: {s.ns}\n"
        f"spec:\n  host: {s.name}\n  rules:\n"
    ]
    for r in range(rules - 1):
        shape = r % 4
        if shape == 0:
            out.append(
                f"    - name: canary-{r}\n      matches:\n"
                f"        - path: {{prefix: /api/v{r}/}}\n          methods: [GET, HEAD]\n"
                "      destinations:\n"
                "        - {service: " + s.name + ", subset: v1, port: 8080, weight: 90}\n"
                "        - {service: " + s.name + ", subset: v2, port: 8080, weight: 10}\n"
                f"      timeout: {rng.choice([2, 3, 5])}s\n"
                "      retries: {attempts: 1, perTryTimeout: 800ms, retryOn: [5xx, connect-failure]}\n"
            )
        elif shape == 1:
            out.append(
                f"    - name: testers-{r}\n      matches:\n"
                f"        - headers:\n            - {{name: x-tester-{r}, exact: \"1\"}}\n"
                "      destinations:\n"
                "        - {service: " + s.name + ", subset: v2, port: 8080}\n"
                "      timeout: 4s\n"
            )
        elif shape == 2:
            out.append(
                f"    - name: items-{r}\n      matches:\n"
                f"        - path: {{regex: \"^/items{r}/[a-z0-9-]+$\"}}\n          methods: [GET]\n"
                "        - queryParams:\n            - {name: debug, present: true}\n"
                "      destinations:\n"
                "        - {service: " + s.name + ", subset: v1, port: 8080}\n"
                "      timeout: 3s\n"
                "      retries: {attempts: 2, perTryTimeout: 1s, retryOn: [5xx, reset]}\n"
                "      headers:\n        request: {set: {x-route: items}}\n"
            )
        else:
            out.append(
                f"    - name: writes-{r}\n      matches:\n"
                f"        - path: {{exact: /api/write{r}}}\n          methods: [POST, PUT]\n"
                "      destinations:\n"
                "        - {service: " + s.name + ", subset: v1, port: 8080}\n"
                "      timeout: 10s\n"
                "      mirror: {service: " + s.name + ", subset: v2, port: 8080, percent: 5}\n"
            )
    out.append(
        "    - name: default\n      destinations:\n"
        "        - {service: " + s.name + ", subset: v1, port: 8080}\n"
        "      timeout: 5s\n"
    )
    return "".join(out)


def _principal(s: _Svc) -> str:
    return f"{TRUST_DOMAIN}/ns/{s.ns}/sa/{s.name}"


def _policy_docs(rng: random.Random, s: _Svc, counter: list[int]) -> list[str]:
    docs = []
    for j, caller in enumerate(s.callers):
        n = counter[0]
        counter[0] += 1
        deny = j > 0 and n % 10 == 9  # the first policy of a service is an ALLOW (MCD118)
        head = (
            f"{API}\nkind: AuthorizationPolicy\nmetadata:\n"
            f"  name: {s.name}-{'deny' if deny else 'allow'}-{n:05d}\n  namespace: {s.ns}\n"
            f"spec:\n  selector: {{services: [{s.name}]}}\n"
            f"  action: {'DENY' if deny else 'ALLOW'}\n  rules:\n"
        )
        if s.tcp:
            # TCP-only fields only: HTTP-only fields on a tcp port would be dropped or widened.
            body = (
                "    - from:\n        - source:\n"
                f"            principals: [\"{_principal(caller)}\"]\n"
                "      to:\n        - operation:\n"
                f"            ports: [\"{'5432' if deny else '8080'}\"]\n"
            )
            if deny:
                body = (
                    "    - from:\n        - source:\n"
                    f"            notNamespaces: [{s.ns}, {caller.ns}]\n"
                    "      to:\n        - operation:\n            ports: [\"5432\"]\n"
                )
        elif deny:
            body = (
                "    - from:\n        - source:\n"
                f"            notPrincipals: [\"{TRUST_DOMAIN}/ns/{s.ns}/sa/admin\"]\n"
                "      to:\n        - operation:\n"
                f"            methods: [DELETE]\n            paths: [\"/admin/{n}*\"]\n"
            )
        else:
            methods = rng.choice(["[GET]", "[GET, HEAD]", "[GET, POST]", "[POST, PUT, DELETE]"])
            body = (
                "    - from:\n        - source:\n"
                f"            principals: [\"{_principal(caller)}\"]\n"
                f"            namespaces: [{caller.ns}]\n"
                "      to:\n        - operation:\n"
                f"            methods: {methods}\n"
                f"            paths: [\"/api/*\", \"/items{n % 7}/*\"]\n"
                "            ports: [\"8080\"]\n"
                "      when:\n        - key: request.headers[x-env]\n          notValues: [test]\n"
            )
        docs.append(head + body)
    return docs


def _traffic_doc(s: _Svc, i: int) -> str:
    lb = (
        "    type: consistent_hash\n    hashOn: {header: x-user}\n"
        if i % 2
        else "    type: least_request\n"
    )
    return (
        f"{API}\nkind: TrafficPolicy\nmetadata:\n  name: {s.name}\n  namespace: {s.ns}\n"
        f"spec:\n  service: {s.name}\n  loadBalancer:\n{lb}"
        "  connectionPool: {maxConnections: 100, maxPendingRequests: 50, connectTimeout: 1s}\n"
        "  outlierDetection: {consecutive5xx: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}\n"
        "  subsets:\n    - name: v2\n      connectionPool: {maxConnections: 10}\n"
    )


MESH = f"""{API}
kind: Mesh
metadata:
  name: mesh
spec:
  trustDomain: {TRUST_DOMAIN}
  rootNamespace: meshcd-system
  mtls: {{mode: STRICT}}
  authorization: {{default: deny}}
  telemetry: {{tracingSamplingPercent: 1, accessLogSamplingPercent: 10}}
  defaultRolloutPolicy: standard
"""

ROLLOUT = f"""{API}
kind: RolloutPolicy
metadata:
  name: standard
  namespace: meshcd-system
spec:
  services: []
  stages:
    - {{count: 1, bake: 30s}}
    - {{percent: 10, bake: 30s}}
    - {{percent: 50, bake: 30s}}
    - {{percent: 100, bake: 30s}}
  analysis: {{maxErrorRatePercent: 1, maxP99LatencyMs: 500, minRequests: 50, confidence: 0.95, onInconclusive: pause}}
  onFailure: rollback
---
{API}
kind: RolloutPolicy
metadata:
  name: careful
  namespace: meshcd-system
spec:
  services: [{{services}}]
  stages:
    - {{count: 1, bake: 2m}}
    - {{percent: 5, bake: 2m}}
    - {{percent: 25, bake: 2m}}
    - {{percent: 100, bake: 5m}}
  onFailure: rollback
"""


def _write_chunks(folder: Path, stem: str, docs: list[str], per_file: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(0, len(docs), per_file):
        path = folder / f"{stem}-{k // per_file:04d}.yaml"
        path.write_text("---\n".join(docs[k : k + per_file]), encoding="utf-8")
        paths.append(path)
    return paths


def generate(
    root: str | Path,
    services: int = 2000,
    routes: int = 10000,
    policies: int = 5000,
    seed: int = 0,
) -> dict[str, int]:
    """Write the synthetic repo under `root` (created if missing). `routes` counts route rules,
    spread over one Route per service host. Returns counts of what was written."""
    if services < 1:
        raise ValueError("services must be >= 1")
    rng = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    svcs = _build_graph(rng, services, policies)
    (root / "mesh.yaml").write_text(MESH, encoding="utf-8")
    careful = ", ".join(s.ref for s in svcs[:: max(1, len(svcs) // 20)])
    rollout_dir = root / "rollout"
    rollout_dir.mkdir(exist_ok=True)
    (rollout_dir / "policies.yaml").write_text(ROLLOUT.replace("{services}", careful), encoding="utf-8")

    files = 2
    by_ns: dict[str, list[int]] = {}
    for i, s in enumerate(svcs):
        by_ns.setdefault(s.ns, []).append(i)
    # Route rules per host: at least one (the catch-all) where a host has a Route at all.
    hosts = min(services, routes)
    rules_per_host = [routes // hosts + (1 if i < routes % hosts else 0) for i in range(hosts)] if hosts else []
    counter = [0]
    route_count = 0
    for ns, idxs in by_ns.items():
        svc_docs = [_service_doc(svcs[i], i) for i in idxs]
        files += len(_write_chunks(root / "services" / ns, "services", svc_docs, PER_SERVICE_FILE))
        route_docs = [_route_doc(rng, svcs[i], rules_per_host[i]) for i in idxs if i < hosts]
        route_count += len(route_docs)
        files += len(_write_chunks(root / "routes" / ns, "routes", route_docs, PER_ROUTE_FILE))
        pol_docs = [d for i in idxs for d in _policy_docs(rng, svcs[i], counter)]
        files += len(_write_chunks(root / "policies" / ns, "policies", pol_docs, PER_POLICY_FILE))
        tp_docs = [_traffic_doc(svcs[i], i) for i in idxs if i % 4 == 0]
        files += len(_write_chunks(root / "traffic" / ns, "traffic", tp_docs, PER_TRAFFIC_FILE))
    return {
        "services": services,
        "routes": route_count,
        "route_rules": sum(rules_per_host),
        "policies": counter[0],
        "traffic_policies": (services + 3) // 4,
        "files": files,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="folder to write the repo into")
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--routes", type=int, default=10000, help="route rules in total")
    ap.add_argument("--policies", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    counts = generate(args.root, args.services, args.routes, args.policies, args.seed)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
