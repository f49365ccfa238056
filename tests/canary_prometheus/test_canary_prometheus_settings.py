"""`analysis:` settings (reconciler/controller/settings.py): the judge's source, Prometheus'
URL, poll period, lag and direction, from the file and MESHCD_* overrides; bad values are
SettingsErrors that say what is wrong. (Here rather than in tests/controller, which other
work owns right now.)"""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.controller.settings import Settings, SettingsError, build_settings


def settings(analysis: Any = None, **env: str) -> Settings:
    data: dict[str, Any] = {"source": {"url": "https://git.example.com/mesh.git"}}
    if analysis is not None:
        data["analysis"] = analysis
    return build_settings(data, env)


def test_defaults_are_the_fleet_stream() -> None:
    s = settings()
    assert s.analysis_source == "fleet" and s.prometheus_url is None
    assert (s.prometheus_interval_s, s.prometheus_lag_s, s.prometheus_direction) == (5.0, 10.0,
                                                                                       None)


def test_prometheus_from_the_file() -> None:
    s = settings({"source": "prometheus", "prometheus": {
        "url": " http://prom:9090/ ", "interval_s": 2, "lag_s": 4.5, "direction": "inbound"}})
    assert s.analysis_source == "prometheus" and s.prometheus_url == "http://prom:9090/"
    assert (s.prometheus_interval_s, s.prometheus_lag_s, s.prometheus_direction) == (2.0, 4.5,
                                                                                       "inbound")


def test_environment_overrides() -> None:
    s = settings({"source": "fleet"}, MESHCD_ANALYSIS_SOURCE="prometheus",
                 MESHCD_PROMETHEUS_URL="https://prom.example:443",
                 MESHCD_PROMETHEUS_INTERVAL_S="1", MESHCD_PROMETHEUS_LAG_S="2",
                 MESHCD_PROMETHEUS_DIRECTION="outbound")
    assert s.analysis_source == "prometheus" and s.prometheus_url == "https://prom.example:443"
    assert (s.prometheus_interval_s, s.prometheus_lag_s, s.prometheus_direction) == (
        1.0, 2.0, "outbound")


@pytest.mark.parametrize(("analysis", "env", "message"), [
    ({"source": "prometheus"}, {}, "analysis.prometheus.url (or MESHCD_PROMETHEUS_URL) is not set"),
    (None, {"MESHCD_ANALYSIS_SOURCE": "prometheus"}, "MESHCD_PROMETHEUS_URL"),
    ({"source": "graphite"}, {}, "analysis.source: 'graphite' is not one of fleet, prometheus"),
    ({"source": "prometheus", "prometheus": {"url": "prom:9090"}}, {},
     "analysis.prometheus.url: expected an http:// or https:// URL"),
    ({"prometheus": {"url": "http://p", "interval_s": 0}}, {},
     "analysis.prometheus.interval_s: 0 is outside"),
    ({"prometheus": {"url": "http://p", "lag_s": -1}}, {}, "analysis.prometheus.lag_s: -1 is outside"),
    ({"prometheus": {"url": "http://p", "lag_s": "soon"}}, {},
     "analysis.prometheus.lag_s: 'soon' is not a number"),
    ({"prometheus": {"url": "http://p", "direction": "both"}}, {},
     "analysis.prometheus.direction: 'both' is not one of inbound, outbound"),
    ({"prometheus": {"url": "http://p", "step": 1}}, {}, "analysis.prometheus: unknown setting(s) step"),
    ({"judge": "x"}, {}, "analysis: unknown setting(s) judge"),
    ("prometheus", {}, "analysis: expected a mapping"),
])
def test_bad_values_are_clear_errors(analysis: Any, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings(analysis, **env)
    assert message in str(err.value)
