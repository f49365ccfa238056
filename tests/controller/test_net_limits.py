"""The pure part of the guarded listeners (reconciler.net.limits): caps, header timeouts and
the accept back-off decision. No sockets, no clock."""

from __future__ import annotations

import errno

import pytest

from reconciler.net.limits import AcceptBackoff, ConnectionTable, ListenerLimits


def test_caps_total_and_per_address() -> None:
    t: ConnectionTable[int] = ConnectionTable(ListenerLimits(max_connections=3,
                                                             max_per_address=2))
    t.opened(1, "10.0.0.1", 0)
    assert t.refusal("10.0.0.1") is None
    t.opened(2, "10.0.0.1", 0)
    assert t.refusal("10.0.0.1") == "max_per_address"
    assert t.refusal("10.0.0.2") is None
    t.opened(3, "10.0.0.2", 0)
    assert t.refusal("10.0.0.3") == "max_connections"
    t.closed(1)
    assert t.refusal("10.0.0.1") is None and len(t) == 2
    t.closed(1)  # twice: no effect
    assert t.busiest(1) == [("10.0.0.1", 1)] or t.busiest(1) == [("10.0.0.2", 1)]


def test_zero_means_no_cap() -> None:
    t: ConnectionTable[int] = ConnectionTable(ListenerLimits(0, 0))
    for i in range(1000):
        t.opened(i, "h", 0)
    assert t.refusal("h") is None


def test_header_timeout_counts_from_open_or_last_request() -> None:
    t: ConnectionTable[str] = ConnectionTable(ListenerLimits(header_timeout_s=10))
    t.opened("idle", "h", 0)
    t.opened("busy", "h", 0)
    t.opened("kept", "h", 0)
    t.request_started("busy", 1)
    t.request_started("kept", 2)
    t.request_ended("kept", 8)
    assert t.overdue(10) == []
    assert t.overdue(10.5) == ["idle"]
    assert sorted(t.overdue(30)) == ["idle", "kept"]  # a request in flight is never overdue
    t.request_ended("busy", 30)
    assert "busy" not in t.overdue(39) and "busy" in t.overdue(41)


def test_no_header_timeout_no_overdue() -> None:
    t: ConnectionTable[str] = ConnectionTable(ListenerLimits())
    t.opened("a", "h", 0)
    assert t.overdue(1e9) == []


def test_backoff_on_descriptor_exhaustion_doubles_and_recovers() -> None:
    b = AcceptBackoff(first_s=0.05, max_s=1.0)
    assert b.accepting
    delays = [b.failed(errno.EMFILE, 100.0 + i) for i in range(8)]
    assert delays[:3] == [0.05, 0.1, 0.2] and max(delays) == 1.0
    assert not b.accepting and b.since == 100.0 and b.last_error == errno.EMFILE
    assert b.succeeded(112.5) == 12.5
    assert b.accepting and b.succeeded(113) is None
    assert b.failed(errno.ENFILE, 200) == 0.05  # streak reset


def test_backoff_other_errors_retry_at_once_then_slow_down() -> None:
    b = AcceptBackoff(other_errors_before_backoff=3)
    assert [b.failed(errno.ECONNABORTED, 0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.failed(errno.EPROTO, 0) > 0
    assert b.accepting  # one half-open connection's error is not "not accepting"


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        ListenerLimits(max_connections=-1)
    with pytest.raises(ValueError):
        ListenerLimits(header_timeout_s=0)


def test_settings_read_listener_limits() -> None:
    from reconciler.controller.settings import SettingsError, build_settings

    s = build_settings({"source": {"url": "/r.git"},
                        "api": {"port": 0, "max_per_address": 5, "header_timeout_s": 2},
                        "fleet": {"max_connections": 0}}, {})
    assert s.api_limits.max_per_address == 5 and s.api_limits.header_timeout_s == 2
    assert s.api_limits.max_connections == 512 and s.api.port == 0
    assert s.fleet_limits.max_connections == 0 and s.fleet_limits.max_per_address == 1000
    with pytest.raises(SettingsError, match=r"fleet: unknown setting.*header_timeout_s"):
        build_settings({"source": {"url": "/r.git"}, "fleet": {"header_timeout_s": 1}}, {})
    with pytest.raises(SettingsError, match=r"api\.max_connections"):
        build_settings({"source": {"url": "/r.git"}, "api": {"max_connections": -1}}, {})
