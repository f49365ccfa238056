"""The Envoy routes the exporter writes pick what the proxy picks: a small model of Envoy's
route selection (domain lookup: exact, then `prefix*` wildcards longest first, then `*`; first
route whose match holds) over the exported RDS must choose the same route and clusters as
`proxy_runtime.config.select_route`, for every caller proxy of the golden cases."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml

from proxy_runtime.config import Identity, compile_snapshot, select_route
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from renderers import default_fleet, render
from renderers.exporters.envoy import export_envoy

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(p.parent.name for p in GOLDEN.glob("*/input"))
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"


def envoy_vhost(vhosts: list[dict[str, Any]], host: str) -> dict[str, Any] | None:
    host = host.lower()
    for v in vhosts:
        if host in v["domains"]:
            return v
    best: tuple[int, dict[str, Any]] | None = None
    for v in vhosts:
        for d in v["domains"]:
            if d.endswith("*") and d != "*" and host.startswith(d[:-1]) and (
                    best is None or len(d) > best[0]):
                best = (len(d), v)
    if best is not None:
        return best[1]
    return next((v for v in vhosts if "*" in v["domains"]), None)


def string_match(m: dict[str, Any], value: str) -> bool:
    if "exact" in m:
        return value == m["exact"]
    if "prefix" in m:
        return value.startswith(m["prefix"])
    return re.fullmatch(m["safe_regex"]["regex"], value) is not None


def envoy_route(v: dict[str, Any], method: str, path_q: str, headers: dict[str, str]) -> dict[str, Any] | None:
    path, _, query = path_q.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    hdrs = {":method": method, **headers}
    for r in v["routes"]:
        m = r["match"]
        if "path" in m and path != m["path"]:
            continue
        if "prefix" in m and not path.startswith(m["prefix"]):
            continue
        if "safe_regex" in m and re.fullmatch(m["safe_regex"]["regex"], path) is None:
            continue
        ok = True
        for h in m.get("headers", []):
            value = hdrs.get(h["name"])
            hit = value is not None if h.get("present_match") else (
                value is not None and string_match(h["string_match"], value))
            ok = ok and hit != bool(h.get("invert_match"))
        for q in m.get("query_parameters", []):
            values = params.get(q["name"])
            ok = ok and values is not None and (
                q.get("present_match") or string_match(q["string_match"], values[0]))
        if ok:
            return r
    return None


def clusters_of(r: dict[str, Any]) -> list[str]:
    action = r["route"]
    if "cluster" in action:
        return [action["cluster"]]
    return [c["name"] for c in action["weighted_clusters"]["clusters"]]


@pytest.mark.parametrize("case", CASES)
def test_envoy_routes_select_like_the_proxy(case: str) -> None:
    result = validate(DirectorySource(GOLDEN / case / "input"))
    assert result.ok
    fleet = default_fleet(result.model)
    rendered = render(result.model, fleet)
    export = export_envoy(rendered.snapshots, fleet)
    rng = random.Random(f"routes-{case}")
    routed = 0
    for proxy in fleet:
        snap = rendered.snapshots[proxy.id].snapshot
        if snap.outbound is None:
            continue
        cfg = compile_snapshot(dataclasses.replace(snap, identity=Identity(
            spiffe_id="spiffe://td/ns/x/sa/x", certificate_pem=PEM, private_key_pem=KEY,
            trust_bundle_pem=PEM)))
        (rc,) = yaml.safe_load(export.files[f"{proxy.id}/rds.yaml"])["resources"]
        domains = [d for v in snap.outbound.virtual_hosts for d in v.domains]
        hosts = domains + [d.split(":")[0] + ":9999" for d in domains] + ["nowhere", "nowhere:80"]
        for _ in range(800):
            host = rng.choice(hosts)
            if rng.random() < 0.3:
                host = host.upper()
            method = rng.choice(["GET", "POST", "PUT", "HEAD", "DELETE"])
            path = rng.choice(["/", "/cart", "/cartx", "/products/1", "/categories/a-1",
                               "/categories/A", "/v2/x", "/health", "/checkout", "/orders/1",
                               "/static/a.css", "/charge", "/x?debug=1", "/y?debug=2"])
            headers = rng.choice([{}, {"x-tester": "1"}, {"x-chaos": "yes"}, {"x-tester": "2"}])
            native = select_route(cfg.outbound, host, method, path, headers)
            vh = envoy_vhost(rc["virtual_hosts"], host)
            if native is None:
                assert vh is None or envoy_route(vh, method, path, headers) is None, (host, path)
                continue
            assert vh is not None and vh["name"] == native[0].name, host
            r = envoy_route(vh, method, path, headers)
            assert r is not None, (host, method, path, headers)
            assert r.get("name") == native[1].route.name, (host, method, path, headers)
            assert clusters_of(r) == list(native[1].clusters)
            routed += 1
    assert routed > 100
