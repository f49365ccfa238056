"""Prometheus as the judge's source of truth: PromQL over HTTP (httpx) turning the proxies'
metrics into the same `Sample` the per-second stats windows give.

Both data planes are read, each by its own names, and their numbers are added (a target
exposes one set or the other, so a mesh can mix them; no setting):

- the builtin proxy (docs/proxy-runtime.md): `mesh_requests_total{direction, ...,
  response_class}`, `mesh_request_duration_seconds_bucket{..., le}` (+ `_sum`),
  `mesh_requests_denied_total`, `mesh_upstream_connect_failures_total{cluster}`;
- Envoy (its `/stats/prometheus`, tags as labels; docs/envoy.md): the connection managers
  meshcd names (`envoy_http_conn_manager_prefix` `inbound_<port>` or `outbound`, the
  direction) give `envoy_http_downstream_rq_xx{envoy_response_code_class}`,
  `envoy_http_downstream_rq_time_bucket{le}` (+ `_sum`; milliseconds, buckets at the
  window's bounds) and `envoy_http_rbac_denied`; TCP listeners' RBAC
  `envoy_rbac_denied{envoy_rbac_prefix="inbound_<port>_rbac"}` (connections refused,
  inbound); clusters' `upstream_cx_connect_fail` (Envoy puts a cluster name's dots into the
  metric name, `envoy_cluster_shop_8080_upstream_cx_connect_fail{envoy_cluster_name=
  "backend"}`, so the name is matched as a regex; the agent's own `meshcd_*` clusters are
  left out).

Canary and baseline are label selections, usually the scrape's `instance` (or a relabelled
proxy id):

    prom = PrometheusProvider("http://127.0.0.1:9090")
    canary = prom.sample({"instance": ["10.0.0.7:15000"]}, start, end)
    baseline = prom.sample({"instance": ["10.0.0.8:15000", "10.0.0.9:15000"]}, start, end)
    verdict = judge(canary, baseline, analysis)

Counts are the exact differences of the raw counters between two instants (`start`, `end`;
a counter that went down was reset, and its end value is the increase), not `increase()`,
which extrapolates. `windows()` gives per-step windows from a range query, `p99_ms()` asks
Prometheus itself (`histogram_quantile` over the same difference, with the `@` modifier).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from reconciler.analysis.sample import CLASSES, LATENCY_BUCKETS, Sample
from reconciler.errors import MeshcdError

REQUESTS = "mesh_requests_total"
BUCKETS = "mesh_request_duration_seconds_bucket"
DURATION_SUM = "mesh_request_duration_seconds_sum"
DENIED = "mesh_requests_denied_total"
CONNECT_FAILURES = "mesh_upstream_connect_failures_total"
INFO = "mesh_config_info"  # labels version, revision, proxy_id, service (set by the agent)

ENVOY_REQUESTS = "envoy_http_downstream_rq_xx"
ENVOY_BUCKETS = "envoy_http_downstream_rq_time_bucket"  # le in milliseconds
ENVOY_DURATION_SUM = "envoy_http_downstream_rq_time_sum"  # milliseconds
ENVOY_HTTP_DENIED = "envoy_http_rbac_denied"
ENVOY_TCP_DENIED = "envoy_rbac_denied"  # envoy_rbac_prefix="inbound_<port>_rbac"
ENVOY_CONNECT_FAILURES = r"envoy_cluster_(.+_)?upstream_cx_connect_fail"  # a regex of names
ENVOY_HCM = "envoy_http_conn_manager_prefix"
_ENVOY_PREFIXES = {None: "inbound_[0-9]+|outbound", "inbound": "inbound_[0-9]+",
                   "outbound": "outbound"}
_AGENT_CLUSTERS = "meshcd_.*"  # the agent's own clusters (xDS, SDS, metrics) on its socket

# What the judge reads, whichever data plane counted it (the keys of the raw series).
REQ, LAT, LAT_SUM, DEN, CONN = "requests", "latency_buckets", "latency_sum", "denials", \
    "connection_failures"
ROLES = (REQ, LAT, LAT_SUM, DEN, CONN)
NAME_LABEL = "meshcd_metric"  # the series' metric name, kept through joins (label_replace)

Selector = Mapping[str, "str | Sequence[str]"]
SeriesKey = tuple[tuple[str, str], ...]


class PrometheusError(MeshcdError, RuntimeError):
    """Prometheus could not be asked, or refused the query."""


class PrometheusUnreachable(PrometheusError):
    """Prometheus could not be reached, or answered without JSON (a proxy, a restart)."""

    temporary = True


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def matcher(selector: Selector, extra: Mapping[str, str] | None = None, *,
            negate: frozenset[str] | set[str] = frozenset()) -> str:
    """PromQL label matchers: a str value is a regex (=~; !~ for the labels in `negate`), a
    sequence of values matches any of them exactly; `extra` adds exact matches."""
    parts = []
    for label, value in sorted(selector.items()):
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
            raise ValueError(f"not a label name: {label!r}")
        if isinstance(value, str):
            regex = value
        else:
            if not value:
                raise ValueError(f"empty value list for label {label!r}")
            regex = "|".join(re.escape(v) for v in value)
        parts.append(f"{label}{'!~' if label in negate else '=~'}{_quote(regex)}")
    for label, value in sorted((extra or {}).items()):
        parts.append(f"{label}={_quote(value)}")
    return "{" + ",".join(parts) + "}"


def redact_url(url: str) -> str:
    """`url` without its user info and query (where credentials would be)."""
    try:
        u = httpx.URL(url)
        return str(u.copy_with(username=None, password=None, query=None, fragment=None))
    except Exception:
        return "<bad url>"


def _key(metric: Mapping[str, str]) -> SeriesKey:
    return tuple(sorted((k, v) for k, v in metric.items() if k != "__name__"))


def _delta(start: float | None, end: float) -> float:
    """A counter's increase between two samples; a decrease means it was reset."""
    if start is None:
        return end  # the series appeared in between: it counted from zero
    return end - start if end >= start else end


class PrometheusProvider:
    def __init__(self, url: str, *, client: httpx.Client | None = None, timeout: float = 10.0,
                 direction: str | None = None) -> None:
        """`direction`: count only "inbound" (a service's own traffic) or "outbound"
        requests; None counts both, as the proxies' stats windows do."""
        self.url = url.rstrip("/")
        self.display_url = redact_url(self.url)
        self.client = client or httpx.Client(timeout=timeout)
        self.direction = direction

    def close(self) -> None:
        self.client.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        try:
            r = self.client.get(f"{self.url}{path}", params=dict(params))
        except httpx.HTTPError as e:
            text = str(e).replace(self.url, self.display_url)
            raise PrometheusUnreachable(f"cannot reach Prometheus at {self.display_url}: "
                                        f"{text or type(e).__name__}") from e
        try:
            body = r.json()
        except ValueError:
            raise PrometheusUnreachable(f"Prometheus answered {r.status_code} without JSON") from None
        if r.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"query refused ({r.status_code}): "
                                  f"{body.get('errorType', '')} {body.get('error', '')}".strip())
        return body["data"]

    def query(self, promql: str, at: float) -> list[tuple[dict[str, str], float]]:
        """An instant query: (labels, value) per series of the resulting vector."""
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        return [(dict(s["metric"]), float(s["value"][1])) for s in data["result"]]

    def query_range(self, promql: str, start: float, end: float, step: float
                    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        data = self._get("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}",
                                                 "end": f"{end:.3f}", "step": f"{step:g}"})
        return [(dict(s["metric"]), [(float(t), float(v)) for t, v in s["values"]])
                for s in data["result"]]

    # -- the judge's input -----------------------------------------------------------------

    def _queries(self, selector: Selector) -> list[_Query]:
        """The series the judge reads, of both data planes, for the selected targets."""
        d = self.direction
        with_dir = matcher(selector, {"direction": d} if d else None)
        hcm = matcher({**selector, ENVOY_HCM: _ENVOY_PREFIXES[d]})
        queries = [
            _Query(REQ, f"{REQUESTS}{with_dir}"),
            _Query(LAT, f"{BUCKETS}{with_dir}"),
            _Query(LAT_SUM, f"{DURATION_SUM}{with_dir}"),
            _Query(DEN, f"{DENIED}{with_dir}"),
            _Query(CONN, f"{CONNECT_FAILURES}{matcher(selector)}"),
            _Query(REQ, f"{ENVOY_REQUESTS}{hcm}", envoy=True),
            _Query(LAT, f"{ENVOY_BUCKETS}{hcm}", envoy=True),
            _Query(LAT_SUM, f"{ENVOY_DURATION_SUM}{hcm}", envoy=True),
            _Query(DEN, f"{ENVOY_HTTP_DENIED}{hcm}", envoy=True),
            _Query(CONN, matcher({**selector, "__name__": ENVOY_CONNECT_FAILURES,
                                  "envoy_cluster_name": f"(?:{_AGENT_CLUSTERS})"},
                                 negate={"envoy_cluster_name"}), envoy=True),
        ]
        if d != "outbound":  # TCP listeners' RBAC is inbound only
            queries.append(_Query(DEN, f"{ENVOY_TCP_DENIED}"
                                       f"{matcher({**selector, 'envoy_rbac_prefix': 'inbound_[0-9]+_rbac'})}",
                                  envoy=True))
        return queries

    def _raw(self, selector: Selector, at: float) -> dict[str, dict[SeriesKey, float]]:
        out: dict[str, dict[SeriesKey, float]] = {role: {} for role in ROLES}
        for q in self._queries(selector):
            for labels, v in self.query(q.promql, at):
                key, scaled = q.normalize(labels, v)
                out[q.role][key] = scaled
        return out

    def sample(self, selector: Selector, start: float, end: float) -> Sample:
        """What the selected proxies served between `start` and `end` (exact counter
        differences), as the judge's Sample."""
        if end <= start:
            raise ValueError("end must be after start")
        before, after = self._raw(selector, start), self._raw(selector, end)
        deltas: dict[str, dict[SeriesKey, float]] = {
            role: {k: _delta(before[role].get(k), v) for k, v in series.items()}
            for role, series in after.items()
        }
        instances = {dict(k).get("instance", "") for k in after[REQ]}
        return _to_sample(deltas, seconds=len(instances) * max(1, round(end - start)))

    def _range(self, q: _Query, promql: str, start: float, end: float, step: float
               ) -> list[tuple[dict[str, str], SeriesKey, list[tuple[float, float]]]]:
        out = []
        for labels, values in self.query_range(promql, start, end, step):
            key, _ = q.normalize(labels, 0.0)
            out.append((labels, key, [(t, v * q.scale) for t, v in values]))
        return out

    def windows(self, selector: Selector, start: float, end: float, step: float = 1.0
                ) -> list[dict[str, Any]]:
        """Per-step windows in the agent's format (`second` = the step's start), from range
        queries of the raw counters, for the engine's StatsReceived or a page's chart. The
        range is whole steps from `start` (the last step may end up to one step after
        `end`)."""
        end = _whole_steps(start, end, step)
        series: dict[str, list[tuple[SeriesKey, list[tuple[float, float]]]]] = {
            role: [] for role in ROLES}
        for q in self._queries(selector):
            for _, key, values in self._range(q, q.promql, start, end, step):
                series[q.role].append((key, values))
        return _step_windows(series, start, step)

    def windows_by_proxy(self, proxy_ids: Sequence[str], start: float, end: float,
                         step: float = 1.0) -> dict[str, list[dict[str, Any]]]:
        """`windows()` per proxy id: the series are attributed to proxies by joining on the
        `proxy_id` label of the proxies' `mesh_config_info` (set by the agent), so the scrape
        config needs no relabelling. One range query per metric for all the proxies. A proxy
        Prometheus holds nothing of is absent from the answer."""
        if not proxy_ids:
            return {}
        end = _whole_steps(start, end, step)
        info = (f"max by (instance, job, proxy_id) "
                f"({INFO}{matcher({'proxy_id': sorted(set(proxy_ids))})})")
        by_proxy: dict[str, dict[str, list[tuple[SeriesKey, list[tuple[float, float]]]]]] = {}
        for q in self._queries({}):
            # `max by` drops the info's version/revision labels: a config change during the
            # range cannot make the match many-to-many. The join drops the metric name; the
            # name label keeps series of different names (Envoy's clusters) apart.
            joined = f"{q.promql} * on(instance, job) group_left(proxy_id) {info}"
            for labels, key, values in self._range(q, joined, start, end, step):
                pid = labels.get("proxy_id", "")
                rows = by_proxy.setdefault(pid, {role: [] for role in ROLES})
                rows[q.role].append((key, values))
        return {pid: _step_windows(series, start, step) for pid, series in sorted(by_proxy.items())
                if pid}

    def p99_ms(self, selector: Selector, start: float, end: float) -> float | None:
        """Prometheus' own histogram_quantile(0.99) over the selection's latency buckets
        between `start` and `end` (None without requests). A selection with requests on
        both data planes is refused: their buckets are in different units (s, ms)."""
        found: list[float] = []
        for q in self._queries(selector):
            if q.role != LAT:
                continue
            at_end, at_start = f"{q.selector} @ {end:.3f}", f"{q.selector} @ {start:.3f}"
            # `or`: a series that appeared in between has no partner to subtract; keep it whole.
            rows = self.query(f"histogram_quantile(0.99, sum by (le) "
                              f"(({at_end} - {at_start}) or {at_end}))", end)
            if rows and not math.isnan(rows[0][1]):
                found.append(rows[0][1] * (1.0 if q.envoy else 1000.0))
        if len(found) > 1:
            raise PrometheusError("the selection has requests of both the builtin proxy and "
                                  "Envoy: select one data plane for p99_ms")
        return found[0] if found else None


@dataclass(frozen=True, slots=True)
class _Query:
    """One vector selector of one data plane, read as one of the judge's ROLES."""

    role: str
    selector: str  # name{matchers} or {__name__=~..., matchers}
    envoy: bool = False

    @property
    def promql(self) -> str:
        return f'label_replace({self.selector}, "{NAME_LABEL}", "$1", "__name__", "(.+)")'

    @property
    def scale(self) -> float:
        """Envoy's latency sum is in milliseconds."""
        return 0.001 if self.envoy and self.role == LAT_SUM else 1.0

    def normalize(self, labels: Mapping[str, str], value: float) -> tuple[SeriesKey, float]:
        """The series' key in the builtin's terms (`response_class`, `le` in seconds), and
        its value in the builtin's units."""
        out = {k: v for k, v in labels.items() if k != "__name__"}
        if self.envoy and self.role == REQ:
            out["response_class"] = f"{out.get('envoy_response_code_class', '')}xx"
        elif self.envoy and self.role == LAT and out.get("le", "+Inf") != "+Inf":
            out["le"] = repr(round(float(out["le"]) / 1000.0, 9))
        return tuple(sorted(out.items())), value * self.scale


def _whole_steps(start: float, end: float, step: float) -> float:
    """The end of the whole steps from `start` that cover `end` (the last one ends at or
    just after it, so nothing up to `end` is left out)."""
    if step <= 0:
        raise ValueError("step must be positive")
    return start + math.ceil((end - start) / step - 1e-9) * step


def _step_windows(series: Mapping[str, list[tuple[SeriesKey, list[tuple[float, float]]]]],
                  start: float, step: float) -> list[dict[str, Any]]:
    """Range-query values of raw counters -> one window per step (`second` = its start)."""
    steps: dict[float, dict[str, dict[SeriesKey, float]]] = {}
    for name, rows in series.items():
        for key, values in rows:
            if values and values[0][0] > start + step / 2:
                # The series appeared within the range: it counted from zero.
                t_first, v_first = values[0]
                steps.setdefault(t_first, {n: {} for n in series})[name][key] = v_first
            for (_, v0), (t1, v1) in itertools.pairwise(values):
                steps.setdefault(t1, {n: {} for n in series})[name][key] = _delta(v0, v1)
    out = []
    for t1 in sorted(steps):
        instances = {dict(k).get("instance", "") for k in steps[t1].get(REQ, {})}
        w = _to_sample(steps[t1], seconds=max(1, len(instances))).to_dict()
        w["second"] = int(t1 - step)
        out.append(w)
    return out


def _to_sample(d: Mapping[str, Mapping[SeriesKey, float]], seconds: int) -> Sample:
    by_class = dict.fromkeys(CLASSES, 0.0)
    for key, v in d.get(REQ, {}).items():
        cls = dict(key).get("response_class", "")
        if cls in by_class:
            by_class[cls] += v
    cumulative: dict[float, float] = {}
    for key, v in d.get(LAT, {}).items():
        le = dict(key).get("le", "")
        bound = math.inf if le == "+Inf" else round(float(le), 9)
        cumulative[bound] = cumulative.get(bound, 0.0) + v
    buckets: list[int] = []
    below = 0.0
    for bound in (*(round(b, 9) for b in LATENCY_BUCKETS), math.inf):
        c = cumulative.get(bound, below)
        buckets.append(max(0, round(c - below)))
        below = max(below, c)
    return Sample(
        tuple(round(by_class[c]) for c in CLASSES),  # type: ignore[arg-type]
        round(sum(d.get(CONN, {}).values())),
        round(sum(d.get(DEN, {}).values())),
        tuple(buckets),
        sum(d.get(LAT_SUM, {}).values()),
        seconds,
    )
