"""The Envoy export loads into Envoy's typed API (envoy-data-plane), keeps every field it
writes, and says what meshcd's proxy says."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import betterproto2
import pytest
import yaml

from proxy_runtime.config import model as pc
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from renderers import default_fleet, render
from renderers.exporters.envoy import export_envoy, fraction, pattern, rbac_rules

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(p.parent.name for p in GOLDEN.glob("*/input"))

# Every typed_config the exporter writes must be a registered type, or Any fails to load.
for _m in (
    "extensions.filters.network.http_connection_manager.v3", "extensions.filters.network.tcp_proxy.v3",
    "extensions.filters.network.rbac.v3", "extensions.filters.http.rbac.v3",
    "extensions.filters.http.router.v3", "extensions.filters.http.fault.v3",
    "extensions.filters.listener.tls_inspector.v3", "extensions.transport_sockets.tls.v3",
    "extensions.access_loggers.stream.v3", "extensions.upstreams.http.v3",
    "config.listener.v3", "config.cluster.v3", "config.route.v3",
):
    importlib.import_module(f"envoy_data_plane.envoy.{_m}")
from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap  # noqa: E402
from envoy_data_plane.envoy.config.cluster.v3 import Cluster  # noqa: E402
from envoy_data_plane.envoy.config.listener.v3 import Listener  # noqa: E402
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration  # noqa: E402
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse  # noqa: E402


@pytest.fixture(autouse=True)
def _proto_field_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """betterproto2 re-cases JSON keys with a function that turns the proto name
    `consecutive_5xx` into `consecutive_5_xx` (no such field). Envoy reads proto field names
    as written, so keys that are already snake_case are taken as they are."""
    original = betterproto2.safe_snake_case
    monkeypatch.setattr(betterproto2, "safe_snake_case",
                        lambda k: k if k == k.lower() else original(k))


def _model(case: str) -> Any:
    result = validate(DirectorySource(GOLDEN / case / "input"))
    assert result.ok
    return result.model


def _export(case: str) -> Any:
    model = _model(case)
    fleet = default_fleet(model)
    return export_envoy(render(model, fleet).snapshots, fleet), render(model, fleet)


# proto3 defaults, enums included (their zero values), which typed messages leave out
_DEFAULTS = (0, False, "", [], {}, "ALLOW", "ROUND_ROBIN", "HUNDRED", "STATIC",
             "APPEND_IF_EXISTS_OR_ADD")


def _lost(a: Any, b: Any, path: str = "") -> list[str]:
    """Fields of `a` (what we wrote) that the typed round trip `b` does not give back, other
    than proto3 defaults (which the typed form leaves out). Keys compare without `_`."""
    if isinstance(a, dict):
        bb = {k.replace("_", ""): v for k, v in (b or {}).items()}
        out = []
        for k, v in a.items():
            if k.replace("_", "") not in bb:
                if v not in _DEFAULTS:
                    out.append(f"{path}/{k}")
                continue
            out += _lost(v, bb[k.replace("_", "")], f"{path}/{k}")
        return out
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return [path]
        return [x for i, (p, q) in enumerate(zip(a, b, strict=True)) for x in _lost(p, q, f"{path}[{i}]")]
    return [] if a == b or (a in _DEFAULTS and b is None) else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.parametrize("case", CASES)
def test_every_file_loads_into_the_typed_envoy_api_and_round_trips(case: str) -> None:
    export, _ = _export(case)
    assert export.files
    for path, text in export.files.items():
        doc = yaml.safe_load(text)
        msg = (Bootstrap if path.endswith("bootstrap.yaml") else DiscoveryResponse).from_dict(doc)
        back = msg.to_dict(casing=betterproto2.Casing.SNAKE)
        assert _lost(doc, back) == [], path


def test_a_field_envoy_would_reject_fails_to_load() -> None:
    export, _ = _export("shop")
    doc = yaml.safe_load(export.files["cart.shop-0/cds.yaml"])
    doc["resources"][0]["lb_polcy"] = "ROUND_ROBIN"
    with pytest.raises(KeyError, match="lb_polcy"):
        DiscoveryResponse.from_dict(doc)
    doc = yaml.safe_load(export.files["cart.shop-0/rds.yaml"])
    doc["resources"][0]["virtual_hosts"][0]["routes"][0]["match"]["path"] = "/x"  # two specifiers
    with pytest.raises(Exception, match="path_specifier"):
        DiscoveryResponse.from_dict(doc)


def _resources(export: Any, path: str, cls: Any) -> list[Any]:
    resp = DiscoveryResponse.from_dict(yaml.safe_load(export.files[path]))
    out = [r.unpack() for r in resp.resources]
    assert all(isinstance(r, cls) for r in out)
    return out


def test_bootstrap_points_at_the_files_next_to_it() -> None:
    export, _ = _export("shop")
    b = Bootstrap.from_dict(yaml.safe_load(export.files["cart.shop-0/bootstrap.yaml"]))
    assert b.node.id == "cart.shop-0" and b.node.cluster == "cart.shop"
    assert b.dynamic_resources.lds_config.path_config_source.path == "/etc/meshcd/envoy/cart.shop-0/lds.yaml"
    assert b.dynamic_resources.cds_config.path_config_source.path == "/etc/meshcd/envoy/cart.shop-0/cds.yaml"
    assert b.admin.address.socket_address.port_value == 21000  # outbound 20000 + 1000


def test_routes_carry_weights_timeouts_retries_mirror_fault_and_header_edits() -> None:
    export, result = _export("canary")
    (rc,) = _resources(export, "web.apps-0/rds.yaml", RouteConfiguration)
    vh = next(v for v in rc.virtual_hosts if v.name == "api.apps:8080")
    assert "api.apps:*" in vh.domains and "api.apps:8080" in vh.domains
    native = result.snapshots["web.apps-0"].snapshot.outbound
    nroutes = next(v for v in native.virtual_hosts if v.name == "api.apps:8080").routes
    assert [r.name for r in vh.routes] == [r.name for r in nroutes]
    split = vh.routes[1]
    assert [(c.name, c.weight) for c in split.route.weighted_clusters.clusters] == [
        ("api.apps|8080|stable", 80), ("api.apps|8080|canary", 20)]
    assert split.route.timeout.total_seconds() == 4
    assert split.route.retry_policy.num_retries == 3
    assert split.route.retry_policy.retry_on == "gateway-error,reset,retriable-4xx"
    assert split.route.request_mirror_policies[0].runtime_fraction.default_value.numerator == 250
    assert split.request_headers_to_remove == ["x-debug"]
    assert [h.header.key for h in split.request_headers_to_add] == ["x-route", "x-canary-split"]
    fault = vh.routes[0].typed_per_filter_config["envoy.filters.http.fault"].unpack()
    assert fault.abort.http_status == 503 and fault.delay.percentage.numerator == 1250
    rest = next(r for r in vh.routes if r.name == "rest")
    assert rest.route.timeout.total_seconds() == 0  # no timeout, not Envoy's 15s


def test_clusters_carry_endpoints_lb_breakers_outlier_and_spiffe_san() -> None:
    export, _ = _export("canary")
    clusters = {c.name: c for c in _resources(export, "web.apps-0/cds.yaml", Cluster)}
    stable = clusters["api.apps|8080|stable"]
    assert stable.lb_policy.name == "RING_HASH"
    ep = stable.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (ep.address, ep.port_value) == ("127.0.0.1", 9211)
    assert stable.circuit_breakers.thresholds[0].max_connections == 200
    assert stable.outlier_detection.consecutive_5xx == 3
    assert stable.outlier_detection.max_ejection_percent == 34
    tls = stable.transport_socket.typed_config.unpack()
    assert tls.sni == "api.apps"
    sans = tls.common_tls_context.validation_context.match_typed_subject_alt_names
    assert [s.matcher.exact for s in sans] == ["spiffe://canary.example/ns/apps/sa/api-sa"]
    assert clusters["api.apps|8080|canary"].lb_policy.name == "RANDOM"
    assert any("maxEjectionPercent" in w.message for w in export.warnings)


def test_inbound_listeners_rbac_audit_deny_allow_in_order() -> None:
    export, _ = _export("policies")
    listeners = {li.name: li for li in _resources(export, "ledger.bank-0/lds.yaml", Listener)}
    hcm = listeners["inbound|9301"].filter_chains[0].filters[0].typed_config.unpack()
    rbacs = [f.typed_config.unpack() for f in hcm.http_filters[:-1]]
    assert [r.rules.action.name for r in rbacs] == ["LOG", "DENY", "ALLOW"]
    assert sorted(rbacs[2].rules.policies) == ["bank/ledger-allow[0]", "bank/ledger-allow[1]"]
    assert hcm.http_filters[-1].name == "envoy.filters.http.router"
    # portal is PERMISSIVE: a TLS chain and a plaintext chain, told apart by the TLS inspector
    portal = _resources(export, "portal.web-0/lds.yaml", Listener)[0]
    assert [c.filter_chain_match.transport_protocol for c in portal.filter_chains] == ["tls", "raw_buffer"]


def test_tcp_listener_drops_allow_rules_with_http_fields() -> None:
    export, _ = _export("tcp")
    listeners = {li.name: li for li in _resources(export, "db.data-0/lds.yaml", Listener)}
    filters = listeners["inbound|9401"].filter_chains[0].filters
    rbac = filters[0].typed_config.unpack()
    assert rbac.rules.action.name == "ALLOW"
    assert list(rbac.rules.policies) == ["data/db-allow[0]"]  # [1] uses methods, [2] port 9187
    assert filters[-1].typed_config.unpack().cluster == "inbound|9401"


def _inbound(policies: tuple[pc.AuthorizationPolicy, ...], *, tcp: bool = False,
             default_deny: bool = False) -> tuple[pc.Inbound, pc.InboundListener]:
    li = pc.InboundListener(port=9000, local_address="127.0.0.1:10000",
                            protocol="tcp" if tcp else "http", service_port=8080)
    return pc.Inbound("s", "ns", (li,), policies, default_deny), li


def test_rbac_ports_are_decided_against_the_service_port() -> None:
    other = pc.AuthorizationPolicy("ns/p", "ALLOW", (pc.Rule(operations=(pc.Operation(ports=("9090",)),)),))
    inbound, li = _inbound((other,))
    # the only rule is for another port: an ALLOW block that allows nothing here
    assert rbac_rules(inbound, li) == [{"action": "ALLOW"}]
    same = pc.AuthorizationPolicy("ns/p", "ALLOW", (pc.Rule(operations=(pc.Operation(ports=("8080",)),)),))
    inbound, li = _inbound((same,))
    assert rbac_rules(inbound, li)[0]["policies"]["ns/p[0]"]["permissions"] == [{"any": True}]


def test_rbac_without_allow_policies_has_no_allow_block_unless_default_deny() -> None:
    deny = pc.AuthorizationPolicy("ns/d", "DENY", (pc.Rule(),))
    inbound, li = _inbound((deny,))
    assert [r["action"] for r in rbac_rules(inbound, li)] == ["DENY"]
    inbound, li = _inbound((deny,), default_deny=True)
    assert [r["action"] for r in rbac_rules(inbound, li)] == ["DENY", "ALLOW"]


def test_patterns_and_fractions() -> None:
    assert pattern("a/b", prefix="spiffe://") == {"exact": "spiffe://a/b"}
    assert pattern("a*", prefix="spiffe://") == {"prefix": "spiffe://a"}
    assert pattern("*.csv") == {"suffix": ".csv"}
    assert pattern("*") == {"safe_regex": {"regex": ".+"}}
    assert pattern("Host", ignore_case=True) == {"exact": "Host", "ignore_case": True}
    assert fraction(5.0) == ({"numerator": 5, "denominator": "HUNDRED"}, True)
    assert fraction(0.1) == ({"numerator": 10, "denominator": "TEN_THOUSAND"}, True)
    assert fraction(12.3456) == ({"numerator": 123456, "denominator": "MILLION"}, True)
    assert fraction(1 / 3)[1] is False


def _write_identity(directory: Path) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "bundle.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@pytest.mark.parametrize("case", CASES)
def test_real_envoy_validates_every_proxys_files(case: str, tmp_path: Path) -> None:
    """`envoy --mode validate` (the real binary) takes each proxy's listeners (their routes
    inlined from rds.yaml) and clusters, with the identity files they name."""
    import json
    import subprocess

    from proxy_runtime.envoy.binary import find_envoy

    envoy = find_envoy()
    if envoy is None:
        pytest.skip("no envoy binary (install meshcd[envoy] or set MESHCD_ENVOY)")
    model = _model(case)
    fleet = default_fleet(model)
    root = tmp_path / "root"
    export = export_envoy(render(model, fleet).snapshots, fleet, root=str(root))
    proxies = sorted({p.split("/")[0] for p in export.files})
    for pid in proxies:
        _write_identity(root / pid / "identity")
        listeners = yaml.safe_load(export.files[f"{pid}/lds.yaml"])["resources"]
        routes = yaml.safe_load(export.files[f"{pid}/rds.yaml"])["resources"]
        clusters = yaml.safe_load(export.files[f"{pid}/cds.yaml"])["resources"]
        for li in listeners:
            for chain in li["filter_chains"]:
                for f in chain["filters"]:
                    rds = f["typed_config"].pop("rds", None)
                    if rds is not None:
                        (rc,) = [r for r in routes if r["name"] == rds["route_config_name"]]
                        f["typed_config"]["route_config"] = {k: v for k, v in rc.items()
                                                             if k != "@type"}
        boot = yaml.safe_load(export.files[f"{pid}/bootstrap.yaml"])
        boot.pop("dynamic_resources")
        boot["admin"]["address"]["socket_address"]["port_value"] = 0
        boot["static_resources"] = {
            "listeners": [{k: v for k, v in li.items() if k != "@type"} for li in listeners],
            "clusters": [{k: v for k, v in c.items() if k != "@type"} for c in clusters]}
        path = tmp_path / f"{pid}.json"
        path.write_text(json.dumps(boot))
        done = subprocess.run([str(envoy), "--mode", "validate", "-c", str(path),
                               "--disable-hot-restart", "--log-level", "error"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{case}/{pid}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
