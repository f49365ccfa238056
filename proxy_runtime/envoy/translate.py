"""The one translation of a native proxy snapshot into Envoy resources (v3, proto JSON).

Pure: a `proxy_runtime.config.model.Snapshot` in, an `EnvoyResources` out, every resource a
proto-JSON dict with its "@type". Two consumers: the agent serves the resources to its Envoy
over ADS (clusters of IP endpoints as EDS, TLS material over SDS), and
`renderers/exporters/envoy.py` writes them as files (`meshcd render --format envoy`: inline
endpoints, RDS and TLS from files; `FileSources`). See docs/envoy.md and docs/exporters.md.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy_runtime.config import model as pc
from proxy_runtime.config.parse import snapshot_to_json
from proxy_runtime.protocol.canonical import compute_version

UINT32_MAX = 4294967295
_T = "type.googleapis.com/"
HCM = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = _T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HTTP_RBAC = _T + "envoy.extensions.filters.http.rbac.v3.RBAC"
NET_RBAC = _T + "envoy.extensions.filters.network.rbac.v3.RBAC"
ROUTER = _T + "envoy.extensions.filters.http.router.v3.Router"
FAULT = _T + "envoy.extensions.filters.http.fault.v3.HTTPFault"
TLS_INSPECTOR = _T + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
DOWNSTREAM_TLS = _T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
STDOUT_LOG = _T + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
HTTP_OPTIONS = _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LISTENER = _T + "envoy.config.listener.v3.Listener"
CLUSTER = _T + "envoy.config.cluster.v3.Cluster"
ROUTE_CONFIG = _T + "envoy.config.route.v3.RouteConfiguration"

CLA = _T + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = _T + "envoy.extensions.transport_sockets.tls.v3.Secret"

FAULT_FILTER = "envoy.filters.http.fault"

OUTBOUND_ROUTES = "outbound"
SVID_SECRET = "default"  # the proxy's certificate and key (SDS), named as Istio names them
BUNDLE_SECRET = "ROOTCA"  # the trust bundle (SDS)
SDS_CLUSTER = "meshcd_sds"  # bootstrap clusters to the agent's Unix socket
XDS_CLUSTER = "meshcd_xds"

ADS_SOURCE: dict[str, Any] = {"ads": {}, "resource_api_version": "V3"}
SDS_SOURCE: dict[str, Any] = {
    "api_config_source": {
        "api_type": "GRPC", "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        "set_node_on_first_message_only": True,
    },
    "resource_api_version": "V3",
}

# Path normalization and framing as Istio ships them (pathNormalization MERGE_SLASHES): the
# path RBAC and routes see is the RFC 3986 normal form (dot segments removed, unreserved
# %XX decoded) with slashes merged; escaped slashes are left as they are (Istio's default);
# a request with both Content-Length and Transfer-Encoding is refused (Envoy's default,
# stated here so no one turns it on by accident).
HCM_HARDENING: dict[str, Any] = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
    "http_protocol_options": {"allow_chunked_length": False},
}

_LB = {"round_robin": "ROUND_ROBIN", "least_request": "LEAST_REQUEST", "random": "RANDOM",
       "consistent_hash": "RING_HASH"}
_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


# --- small builders -------------------------------------------------------------------------


def dur(ms: int) -> str:
    """Protobuf JSON duration: `2s`, `0.800s`."""
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms // 1000}.{ms % 1000:03d}s"


def re2_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


def fraction(percent: float) -> tuple[dict[str, Any], bool]:
    """A percentage as a FractionalPercent, with the coarsest exact denominator; the bool is
    False when even MILLION cannot hold it exactly (then it is rounded)."""
    for denominator, scale in (("HUNDRED", 1), ("TEN_THOUSAND", 100), ("MILLION", 10000)):
        n = percent * scale
        if abs(n - round(n)) < 1e-9:
            return {"numerator": round(n), "denominator": denominator}, True
    return {"numerator": round(percent * 10000), "denominator": "MILLION"}, False


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _typed(type_url: str, **fields: Any) -> dict[str, Any]:
    return {"@type": type_url, **fields}


def _any_of(items: list[dict[str, Any]], key: str, ids: str) -> dict[str, Any]:
    """or_rules/or_ids (key, ids = "or_rules", "rules") of several, or the one itself."""
    return items[0] if len(items) == 1 else {key: {ids: items}}


def _all_of(items: list[dict[str, Any]], key: str, ids: str, anything: dict[str, Any]) -> dict[str, Any]:
    if not items:
        return anything
    return items[0] if len(items) == 1 else {key: {ids: items}}


# --- authorization: Istio rules -> envoy.config.rbac.v3 -------------------------------------


def pattern(value: str, *, prefix: str = "", ignore_case: bool = False) -> dict[str, Any]:
    """An Istio string pattern (`abc`, `abc*`, `*abc`, `*`) as a StringMatcher; `prefix` goes
    in front of exact and prefix values (principals: `spiffe://`)."""
    if value == "*":
        out: dict[str, Any] = {"safe_regex": {"regex": ".+"}}
    elif value.startswith("*"):
        out = {"suffix": value[1:]}
    elif value.endswith("*"):
        out = {"prefix": prefix + value[:-1]}
    else:
        out = {"exact": prefix + value}
    if ignore_case and "safe_regex" not in out:
        out["ignore_case"] = True
    return out


def _ns_regex(value: str) -> str:
    """The SPIFFE URIs whose namespace segment matches the Istio pattern `value`."""
    if value == "*":
        seg = "[^/]+"
    elif value.startswith("*"):
        seg = "[^/]*" + re2_escape(value[1:])
    elif value.endswith("*"):
        seg = re2_escape(value[:-1]) + "[^/]*"
    else:
        seg = re2_escape(value)
    return f"spiffe://[^/]+/ns/{seg}/sa/[^/]+"


def _cidr(value: str) -> dict[str, Any]:
    net = ipaddress.ip_network(value, strict=False)
    return {"address_prefix": str(net.network_address), "prefix_len": net.prefixlen}


ANY_ID: dict[str, Any] = {"any": True}
ANY_RULE: dict[str, Any] = {"any": True}
NEVER_RULE: dict[str, Any] = {"not_rule": {"any": True}}


def _ids(values: tuple[str, ...], make: Any) -> dict[str, Any]:
    return _any_of([make(v) for v in values], "or_ids", "ids")


def _rules(values: tuple[str, ...], make: Any) -> dict[str, Any]:
    return _any_of([make(v) for v in values], "or_rules", "rules")


def _principal(v: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": pattern(v, prefix="spiffe://")}}


def _namespace(v: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": _ns_regex(v)}}}}


def _source_ip(v: str) -> dict[str, Any]:
    return {"direct_remote_ip": _cidr(v)}


def _remote_ip(v: str) -> dict[str, Any]:
    return {"remote_ip": _cidr(v)}


def _header_id(name: str) -> Any:
    return lambda v: {"header": {"name": name, "string_match": pattern(v)}}


def _source(s: pc.Source) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for values, negated, make in (
        (s.principals, False, _principal), (s.not_principals, True, _principal),
        (s.namespaces, False, _namespace), (s.not_namespaces, True, _namespace),
        (s.ip_blocks, False, _source_ip), (s.not_ip_blocks, True, _source_ip),
        (s.remote_ip_blocks, False, _remote_ip), (s.not_remote_ip_blocks, True, _remote_ip),
    ):
        if values:
            m = _ids(values, make)
            parts.append({"not_id": m} if negated else m)
    return _all_of(parts, "and_ids", "ids", ANY_ID)


def _port_rule(ports: tuple[str, ...], service_port: int | None) -> bool:
    """Whether the listener's Service port is among `ports`: decided here, because Envoy sees
    the port the proxy listens on, not the Service port the policy names."""
    return str(service_port) in ports


def _operation(o: pc.Operation, service_port: int | None, tcp: bool) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if o.ports and not _port_rule(o.ports, service_port):
        return NEVER_RULE
    if o.not_ports and _port_rule(o.not_ports, service_port):
        return NEVER_RULE
    if not tcp:
        for values, negated, make in (
            (o.hosts, False, lambda v: {"header": {"name": ":authority",
                                                   "string_match": pattern(v, ignore_case=True)}}),
            (o.not_hosts, True, lambda v: {"header": {"name": ":authority",
                                                      "string_match": pattern(v, ignore_case=True)}}),
            (o.methods, False, lambda v: {"header": {"name": ":method", "string_match": pattern(v)}}),
            (o.not_methods, True, lambda v: {"header": {"name": ":method",
                                                        "string_match": pattern(v)}}),
            (o.paths, False, lambda v: {"url_path": {"path": pattern(v)}}),
            (o.not_paths, True, lambda v: {"url_path": {"path": pattern(v)}}),
        ):
            if values:
                m = _rules(values, make)
                parts.append({"not_rule": m} if negated else m)
    return _all_of(parts, "and_rules", "rules", ANY_RULE)


def _uses_http(rule: pc.Rule) -> bool:
    return any(
        o.hosts or o.not_hosts or o.methods or o.not_methods or o.paths or o.not_paths
        for o in rule.operations
    ) or any(c.key.startswith("request.headers[") for c in rule.when)


def _condition(c: pc.Condition, service_port: int | None, tcp: bool
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A `when` condition as (principal parts, permission parts)."""
    ids: list[dict[str, Any]] = []
    perms: list[dict[str, Any]] = []

    def both(target: list[dict[str, Any]], build: Any, neg_key: str) -> None:
        if c.values:
            target.append(build(c.values))
        if c.not_values:
            target.append({neg_key: build(c.not_values)})

    key = c.key
    if key.startswith("request.headers["):
        if not tcp:
            name = key[len("request.headers["):-1]
            both(ids, lambda vs: _ids(vs, _header_id(name)), "not_id")
    elif key == "source.ip":
        both(ids, lambda vs: _ids(vs, _source_ip), "not_id")
    elif key == "remote.ip":
        both(ids, lambda vs: _ids(vs, _remote_ip), "not_id")
    elif key == "source.namespace":
        both(ids, lambda vs: _ids(vs, _namespace), "not_id")
    elif key == "source.principal":
        both(ids, lambda vs: _ids(vs, _principal), "not_id")
    elif key == "destination.ip":
        both(perms, lambda vs: _rules(vs, lambda v: {"destination_ip": _cidr(v)}), "not_rule")
    elif key == "destination.port":
        if c.values and not _port_rule(c.values, service_port):
            perms.append(NEVER_RULE)
        if c.not_values and _port_rule(c.not_values, service_port):
            perms.append(NEVER_RULE)
    elif key == "connection.sni":
        both(perms, lambda vs: _rules(
            vs, lambda v: {"requested_server_name": pattern(v, ignore_case=True)}), "not_rule")
    return ids, perms


def rbac_policy(rule: pc.Rule, service_port: int | None, tcp: bool) -> dict[str, Any] | None:
    """One Istio rule as an Envoy RBAC Policy on one listener, or None when it can never match
    there. The caller applies Istio's TCP asymmetry (ALLOW rules with HTTP fields are dropped);
    here HTTP-only fields are ignored on tcp."""
    perm_parts: list[dict[str, Any]] = []
    id_parts: list[dict[str, Any]] = []
    if rule.operations:
        ops = [_operation(o, service_port, tcp) for o in rule.operations]
        ops = [o for o in ops if o != NEVER_RULE]
        if not ops:
            return None
        perm_parts.append(_any_of(ops, "or_rules", "rules"))
    if rule.sources:
        id_parts.append(_any_of([_source(s) for s in rule.sources], "or_ids", "ids"))
    for c in rule.when:
        ids, perms = _condition(c, service_port, tcp)
        if NEVER_RULE in perms:
            return None
        id_parts += ids
        perm_parts += perms
    perm_parts = [p for p in perm_parts if p != ANY_RULE]
    id_parts = [p for p in id_parts if p != ANY_ID]
    return {
        "permissions": [_all_of(perm_parts, "and_rules", "rules", ANY_RULE)],
        "principals": [_all_of(id_parts, "and_ids", "ids", ANY_ID)],
    }


_ACTION = {"ALLOW": "ALLOW", "DENY": "DENY", "AUDIT": "LOG"}


def rbac_rules(inbound: pc.Inbound, listener: pc.InboundListener) -> list[dict[str, Any]]:
    """The RBAC `rules` blocks for one listener, in evaluation order: AUDIT (action LOG, never
    denies), DENY, ALLOW. The ALLOW block exists when some ALLOW policy applies or the Mesh is
    default-deny; with no policy left in it, it denies everything (as Istio's ALLOW does)."""
    tcp = listener.protocol == "tcp"
    blocks: dict[str, dict[str, Any]] = {}
    has_allow = inbound.default_deny
    for p in inbound.policies:
        has_allow = has_allow or p.action == "ALLOW"
        for i, rule in enumerate(p.rules):
            if tcp and p.action == "ALLOW" and _uses_http(rule):
                continue  # Istio's TCP asymmetry: such an ALLOW rule allows nothing on tcp
            pol = rbac_policy(rule, listener.service_port, tcp)
            if pol is not None:
                blocks.setdefault(p.action, {})[f"{p.name}[{i}]"] = pol
    out = []
    for action in ("AUDIT", "DENY", "ALLOW"):
        policies = blocks.get(action)
        if policies or (action == "ALLOW" and has_allow):
            rules: dict[str, Any] = {"action": _ACTION[action]}
            if policies:
                rules["policies"] = policies
            out.append(rules)
    return out


# --- listeners -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileSources:
    """The file-based form (`meshcd render --format envoy`): the route configuration is read
    from `rds_path` and the identity from `identity_dir`/{cert,key,bundle}.pem (watched)."""

    rds_path: str
    identity_dir: str


class _Ctx:
    def __init__(self, snapshot: pc.Snapshot, sds: bool, files: FileSources | None) -> None:
        self.snapshot = snapshot
        self.sds = sds
        self.files = files
        self.warnings: list[str] = []
        self.endpoints: list[dict[str, Any]] = []

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def rds_source(self) -> dict[str, Any]:
        if self.files is not None:
            return {"path_config_source": {"path": self.files.rds_path},
                    "resource_api_version": "V3"}
        return ADS_SOURCE

    def common_tls(self, peer_ids: tuple[str, ...] = ()) -> dict[str, Any]:
        sans = [{"san_type": "URI", "matcher": {"exact": i}} for i in peer_ids]
        if self.sds:
            default: dict[str, Any] = {}
            if sans:
                default["match_typed_subject_alt_names"] = sans
            return {
                "tls_certificate_sds_secret_configs": [
                    {"name": SVID_SECRET, "sds_config": SDS_SOURCE}],
                "combined_validation_context": {
                    "default_validation_context": default,
                    "validation_context_sds_secret_config": {"name": BUNDLE_SECRET,
                                                             "sds_config": SDS_SOURCE},
                },
            }
        assert self.files is not None
        identity_dir = self.files.identity_dir
        validation: dict[str, Any] = {
            "trusted_ca": {"filename": f"{identity_dir}/bundle.pem"},
            "watched_directory": {"path": identity_dir},
        }
        if sans:
            validation["match_typed_subject_alt_names"] = sans
        return {
            "tls_certificates": [{
                "certificate_chain": {"filename": f"{identity_dir}/cert.pem"},
                "private_key": {"filename": f"{identity_dir}/key.pem"},
                "watched_directory": {"path": identity_dir},
            }],
            "validation_context": validation,
        }

    def telemetry_hcm(self) -> dict[str, Any]:
        t = self.snapshot.telemetry
        out: dict[str, Any] = {}
        if t.access_log_sampling_percent > 0:
            log: dict[str, Any] = {"name": "envoy.access_loggers.stdout",
                                   "typed_config": _typed(STDOUT_LOG)}
            if t.access_log_sampling_percent < 100:
                frac, exact = fraction(t.access_log_sampling_percent)
                if not exact:
                    self.warn("telemetry.accessLogSamplingPercent: rounded to millionths")
                log["filter"] = {"runtime_filter": {"runtime_key": "meshcd.access_log_sampling",
                                                    "percent_sampled": frac,
                                                    "use_independent_randomness": True}}
            out["access_log"] = [log]
        out["tracing"] = {"random_sampling": {"value": t.tracing_sampling_percent}}
        return out


def _inbound_listener(ctx: _Ctx, inbound: pc.Inbound, li: pc.InboundListener
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    name = f"inbound|{li.port}"
    rules = rbac_rules(inbound, li)
    if li.protocol == "tcp":
        filters: list[dict[str, Any]] = [
            {"name": "envoy.filters.network.rbac",
             "typed_config": _typed(NET_RBAC, stat_prefix=f"inbound_{li.port}_rbac", rules=r)}
            for r in rules
        ]
        filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": _typed(
            TCP_PROXY, stat_prefix=f"inbound_{li.port}", cluster=name)})
    else:
        http_filters: list[dict[str, Any]] = [
            {"name": "envoy.filters.http.rbac", "typed_config": _typed(HTTP_RBAC, rules=r)}
            for r in rules
        ]
        http_filters.append({"name": "envoy.filters.http.router", "typed_config": _typed(ROUTER)})
        filters = [{"name": "envoy.filters.network.http_connection_manager", "typed_config": _typed(
            HCM,
            stat_prefix=f"inbound_{li.port}",
            route_config={"name": name, "virtual_hosts": [{
                "name": name, "domains": ["*"],
                "routes": [{"match": {"prefix": "/"},
                            "route": {"cluster": name, "timeout": "0s"}}],
            }]},
            http_filters=http_filters,
            **HCM_HARDENING,
            **ctx.telemetry_hcm(),
        )}]
    tls_socket = {"name": "envoy.transport_sockets.tls", "typed_config": _typed(
        DOWNSTREAM_TLS, common_tls_context=ctx.common_tls(), require_client_certificate=True)}
    listener: dict[str, Any] = {"name": name, "address": socket_address(li.bind_address, li.port)}
    if li.mtls_mode == "STRICT":
        listener["filter_chains"] = [{"filters": filters, "transport_socket": tls_socket}]
    elif li.mtls_mode == "PERMISSIVE":
        # mTLS or plaintext, told apart by the first bytes (TLS inspector), as the proxy does.
        listener["listener_filters"] = [{"name": "envoy.filters.listener.tls_inspector",
                                         "typed_config": _typed(TLS_INSPECTOR)}]
        listener["filter_chains"] = [
            {"name": "mtls", "filter_chain_match": {"transport_protocol": "tls"},
             "filters": filters, "transport_socket": tls_socket},
            {"name": "plaintext", "filter_chain_match": {"transport_protocol": "raw_buffer"},
             "filters": filters},
        ]
    else:
        listener["filter_chains"] = [{"filters": filters}]
    host, port = split_host_port(li.local_address)
    app = {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}]},
    }
    return listener, app


def _outbound_listener(ctx: _Ctx, out: pc.Outbound) -> dict[str, Any]:
    http_filters: list[dict[str, Any]] = []
    if any(r.fault for v in out.virtual_hosts for r in v.routes):
        # Does nothing by itself; routes with a fault carry their own config for it.
        http_filters.append({"name": FAULT_FILTER, "typed_config": _typed(FAULT)})
    http_filters.append({"name": "envoy.filters.http.router", "typed_config": _typed(ROUTER)})
    return {
        "name": "outbound",
        "address": socket_address(out.bind_address, out.port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": _typed(
                HCM,
                stat_prefix="outbound",
                rds={"route_config_name": OUTBOUND_ROUTES, "config_source": ctx.rds_source()},
                http_filters=http_filters,
                **HCM_HARDENING,
                **ctx.telemetry_hcm(),
            ),
        }]}],
    }


def _tcp_listener(ctx: _Ctx, t: pc.TcpListener, clusters: Mapping[str, pc.Cluster]) -> dict[str, Any]:
    proxy: dict[str, Any] = {"stat_prefix": f"tcp_{t.port}", "cluster": t.cluster}
    c = clusters.get(t.cluster)
    if c is not None and c.hash_key is not None:
        if c.hash_key.source_ip:
            proxy["hash_policy"] = [{"source_ip": {}}]
        else:
            ctx.warn(f"tcp[port {t.port}]: cluster {t.cluster} hashes on a header or cookie, "
                     "which a TCP forward does not have; Envoy hashes nothing (ring hash on a "
                     "random key)")
    return {
        "name": f"tcp|{t.port}",
        "address": socket_address(t.bind_address, t.port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                        "typed_config": _typed(TCP_PROXY, **proxy)}]}],
    }


# --- routes --------------------------------------------------------------------------------


def _string_match(exact: str | None, prefix: str | None, regex: str | None) -> dict[str, Any]:
    if exact is not None:
        return {"exact": exact}
    if prefix is not None:
        return {"prefix": prefix}
    return {"safe_regex": {"regex": regex or ""}}


def _route_match(ctx: _Ctx, where: str, m: pc.RouteMatch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m.path is None:
        out["prefix"] = "/"
    elif m.path.exact is not None:
        out["path"] = m.path.exact
    elif m.path.prefix is not None:
        out["prefix"] = m.path.prefix
    else:
        out["safe_regex"] = {"regex": m.path.regex or ""}
    headers: list[dict[str, Any]] = []
    if m.methods:
        sm_: dict[str, Any] = ({"exact": m.methods[0]} if len(m.methods) == 1 else
                               {"safe_regex": {"regex": "|".join(re2_escape(x) for x in m.methods)}})
        headers.append({"name": ":method", "string_match": sm_})
    for h in m.headers:
        if h.present is not None:
            hm: dict[str, Any] = {"name": h.name, "present_match": True}
            if not h.present:
                hm["invert_match"] = True
        else:
            hm = {"name": h.name, "string_match": _string_match(h.exact, h.prefix, h.regex)}
        headers.append(hm)
    params: list[dict[str, Any]] = []
    for q in m.query_params:
        if q.present is not None:
            if not q.present:  # Envoy's query matcher has no absence: a :path regex, inverted
                headers.append({"name": ":path", "invert_match": True,
                                "string_match": {"safe_regex": {"regex": _has_param(q.name)}}})
                continue
            params.append({"name": q.name, "present_match": True})
        else:
            params.append({"name": q.name, "string_match": _string_match(q.exact, None, q.regex)})
    if headers:
        out["headers"] = headers
    if params:
        out["query_parameters"] = params
    return out


def _has_param(name: str) -> str:
    """RE2 (whole :path) for a path whose query string has parameter `name`, value or not."""
    return rf"[^?]*\?(?:[^&]*&)*{re2_escape(name)}(?:=[^&]*)?(?:&.*)?"


def _header_edits(prefix: str, edits: pc.HeaderEdits | None) -> dict[str, Any]:
    """Envoy removes first, then adds in list order: so remove, set (overwrite), add (append),
    as the proxy does."""
    if edits is None:
        return {}
    adds = [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in edits.set.items()]
    adds += [{"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
             for k, v in edits.add.items()]
    out: dict[str, Any] = {}
    if adds:
        out[f"{prefix}_headers_to_add"] = adds
    if edits.remove:
        out[f"{prefix}_headers_to_remove"] = list(edits.remove)
    return out


def _hash_policy(ctx: _Ctx, where: str, route: pc.Route, clusters: Mapping[str, pc.Cluster]
                 ) -> list[dict[str, Any]]:
    keys = {clusters[w.cluster].hash_key for w in route.clusters
            if w.cluster in clusters and clusters[w.cluster].hash_key is not None}
    if not keys:
        return []
    if len(keys) > 1:
        ctx.warn(f"{where}: its clusters hash on different keys; Envoy hashes a route on one "
                 "set of keys, so all of them are combined")
    out: list[dict[str, Any]] = []
    for k in sorted(keys, key=repr):
        if k is None:
            continue
        if k.header is not None:
            out.append({"header": {"header_name": k.header}})
        elif k.cookie is not None:
            out.append({"cookie": {"name": k.cookie}})
        else:
            out.append({"connection_properties": {"source_ip": True}})
    return out


def _route(ctx: _Ctx, where: str, r: pc.Route, clusters: Mapping[str, pc.Cluster]) -> dict[str, Any]:
    action: dict[str, Any] = {}
    if len(r.clusters) == 1:
        action["cluster"] = r.clusters[0].cluster
    else:
        action["weighted_clusters"] = {"clusters": [
            {"name": w.cluster, "weight": w.weight} for w in r.clusters]}
    # Envoy's default route timeout is 15s; the proxy has none unless one is given.
    action["timeout"] = dur(r.timeout_ms) if r.timeout_ms is not None else "0s"
    if r.retries is not None:
        retry: dict[str, Any] = {"retry_on": ",".join(r.retries.retry_on),
                                 "num_retries": r.retries.attempts}
        if r.retries.per_try_timeout_ms is not None:
            retry["per_try_timeout"] = dur(r.retries.per_try_timeout_ms)
        action["retry_policy"] = retry
    hp = _hash_policy(ctx, where, r, clusters)
    if hp:
        action["hash_policy"] = hp
    if r.mirror is not None:
        mirror: dict[str, Any] = {"cluster": r.mirror.cluster}
        if r.mirror.percent < 100:
            frac, exact = fraction(r.mirror.percent)
            if not exact:
                ctx.warn(f"{where}.mirror.percent: rounded to millionths")
            mirror["runtime_fraction"] = {"default_value": frac}
        action["request_mirror_policies"] = [mirror]
    out: dict[str, Any] = {}
    if r.name is not None:
        out["name"] = r.name
    out["match"] = _route_match(ctx, where, r.match)
    out["route"] = action
    out.update(_header_edits("request", r.request_headers))
    out.update(_header_edits("response", r.response_headers))
    if r.fault is not None:
        fault: dict[str, Any] = {}
        if r.fault.delay is not None:
            frac, exact = fraction(r.fault.delay.percent)
            if not exact:
                ctx.warn(f"{where}.fault.delay.percent: rounded to millionths")
            fault["delay"] = {"fixed_delay": dur(r.fault.delay.fixed_ms), "percentage": frac}
        if r.fault.abort is not None:
            frac, exact = fraction(r.fault.abort.percent)
            if not exact:
                ctx.warn(f"{where}.fault.abort.percent: rounded to millionths")
            fault["abort"] = {"http_status": r.fault.abort.http_status, "percentage": frac}
        out["typed_per_filter_config"] = {FAULT_FILTER: _typed(FAULT, **fault)}
    return out


def _virtual_host(ctx: _Ctx, i: int, v: pc.VirtualHost, clusters: Mapping[str, pc.Cluster]
                  ) -> dict[str, Any]:
    # The proxy looks a Host up as sent, then without its port. Envoy matches the Host as sent,
    # so each name without a port also gets `name:*` (any port), which only an exact domain beats.
    domains = list(v.domains)
    domains += [f"{d}:*" for d in v.domains if ":" not in d and d != "*"]
    return {
        "name": v.name,
        "domains": domains,
        "routes": [_route(ctx, f"outbound.virtualHosts[{i}].routes[{j}]", r, clusters)
                   for j, r in enumerate(v.routes)],
    }


# --- clusters ------------------------------------------------------------------------------


def _cluster(ctx: _Ctx, c: pc.Cluster) -> dict[str, Any]:
    hosts = [split_host_port(e.address) for e in c.endpoints]
    out: dict[str, Any] = {
        "name": c.name,
        "type": "STATIC" if all(_is_ip(h) for h, _ in hosts) else "STRICT_DNS",
        "connect_timeout": dur(c.connection_pool.connect_timeout_ms),
        "lb_policy": _LB[c.lb_policy],
        "load_assignment": {"cluster_name": c.name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket_address(h, p)}, "load_balancing_weight": e.weight}
            for (h, p), e in zip(hosts, c.endpoints, strict=True)
        ]}] if hosts else []},
        # The proxy caps connections and pending requests only; Envoy's other defaults
        # (1024 requests, 3 concurrent retries) would cap more, so they are lifted.
        "circuit_breakers": {"thresholds": [{
            "max_connections": c.connection_pool.max_connections,
            "max_pending_requests": c.connection_pool.max_pending_requests,
            "max_requests": UINT32_MAX,
            "max_retries": UINT32_MAX,
        }]},
    }
    if c.protocol == "http" and c.connection_pool.max_requests_per_connection > 0:
        out["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                HTTP_OPTIONS,
                common_http_protocol_options={
                    "max_requests_per_connection": c.connection_pool.max_requests_per_connection},
                explicit_http_config={"http_protocol_options": {}},
            )}
    if ctx.files is None and hosts and all(_is_ip(h) for h, _ in hosts):
        # Served over ADS: the endpoints travel as EDS, so an endpoint change is not a cluster
        # change (Envoy keeps the cluster, its pools and its outlier state).
        out["type"] = "EDS"
        out["eds_cluster_config"] = {"eds_config": ADS_SOURCE}
        ctx.endpoints.append(_typed(CLA, **out.pop("load_assignment")))
    o = c.outlier_detection
    if o is not None:
        pct = round(o.max_ejection_percent)
        if pct != o.max_ejection_percent:
            ctx.warn(f"clusters[{c.name}].outlierDetection.maxEjectionPercent: Envoy takes a "
                     f"whole percentage; {o.max_ejection_percent} rounded to {pct}")
        out["outlier_detection"] = {
            "consecutive_5xx": o.consecutive_5xx,
            "interval": dur(o.interval_ms),
            "base_ejection_time": dur(o.base_ejection_time_ms),
            "max_ejection_percent": pct,
            # The proxy ejects on consecutive 5xx only; Envoy's success-rate ejection is on by
            # default and is turned off.
            "enforcing_success_rate": 0,
        }
    if c.tls is not None and c.tls.mode == "MUTUAL":
        tls: dict[str, Any] = {"common_tls_context": ctx.common_tls(c.tls.peer_spiffe_ids)}
        if c.tls.sni:
            tls["sni"] = c.tls.sni
        out["transport_socket"] = {"name": "envoy.transport_sockets.tls",
                                   "typed_config": _typed(UPSTREAM_TLS, **tls)}
    return out



# --- the whole snapshot --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvoyResources:
    """One snapshot as Envoy resources. `version` is the snapshot's content version (its
    identity left out: certificates travel over SDS, not in these resources); `secrets` names
    the SDS secrets the resources refer to; `warnings` says where Envoy cannot do exactly what
    meshcd's model says."""

    version: str
    clusters: tuple[dict[str, Any], ...]
    endpoints: tuple[dict[str, Any], ...]
    listeners: tuple[dict[str, Any], ...]
    routes: tuple[dict[str, Any], ...]
    secrets: tuple[str, ...]
    warnings: tuple[str, ...]

    def by_type(self) -> dict[str, tuple[dict[str, Any], ...]]:
        """Type URL -> resources, in the order xDS wants them pushed (CDS, EDS, LDS, RDS)."""
        return {CLUSTER: self.clusters, CLA: self.endpoints, LISTENER: self.listeners,
                ROUTE_CONFIG: self.routes}


PUSH_ORDER: tuple[str, ...] = (CLUSTER, CLA, LISTENER, ROUTE_CONFIG)


def resource_name(resource: Mapping[str, Any]) -> str:
    """The name xDS knows a resource by (ClusterLoadAssignment: its cluster_name)."""
    return str(resource.get("name") or resource.get("cluster_name") or "")


def content_version(snapshot: pc.Snapshot) -> str:
    doc = snapshot_to_json(snapshot)
    doc.pop("identity", None)
    return compute_version(doc)


def translate(snapshot: pc.Snapshot, *, sds: bool = True,
              files: FileSources | None = None) -> EnvoyResources:
    """The snapshot as Envoy resources. `sds`: TLS material from the agent's SDS (names in
    `secrets`); else from the files under `files.identity_dir`. `files` given: the file-based
    form (RDS from a file, endpoints inline); else everything over ADS."""
    if not sds and files is None:
        raise ValueError("without SDS the certificates come from files: give `files`")
    ctx = _Ctx(snapshot, sds, files)
    clusters = {c.name: c for c in snapshot.clusters}
    listeners: list[dict[str, Any]] = []
    cds: list[dict[str, Any]] = []
    if snapshot.inbound is not None:
        for li in snapshot.inbound.listeners:
            listener, app = _inbound_listener(ctx, snapshot.inbound, li)
            listeners.append(listener)
            cds.append(app)
    rds: list[dict[str, Any]] = []
    if snapshot.outbound is not None:
        listeners.append(_outbound_listener(ctx, snapshot.outbound))
        rds.append({"name": OUTBOUND_ROUTES, "virtual_hosts": [
            _virtual_host(ctx, i, v, clusters)
            for i, v in enumerate(snapshot.outbound.virtual_hosts)]})
    listeners += [_tcp_listener(ctx, t, clusters) for t in snapshot.tcp]
    cds += [_cluster(ctx, c) for c in snapshot.clusters]
    uses_tls = (any(li.mtls_mode != "DISABLE" for li in snapshot.inbound.listeners)
                if snapshot.inbound else False) or any(
        c.tls is not None and c.tls.mode == "MUTUAL" for c in snapshot.clusters)
    return EnvoyResources(
        version=content_version(snapshot),
        clusters=tuple(_typed(CLUSTER, **c) for c in cds),
        endpoints=tuple(ctx.endpoints),
        listeners=tuple(_typed(LISTENER, **li) for li in listeners),
        routes=tuple(_typed(ROUTE_CONFIG, **r) for r in rds),
        secrets=(SVID_SECRET, BUNDLE_SECRET) if sds and uses_tls else (),
        warnings=tuple(ctx.warnings),
    )
