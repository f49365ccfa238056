"""Playbooks for the ADS stream state machine (proxy_runtime/envoy/xds.py): requests in,
pushes and outcomes out, no Envoy."""

from __future__ import annotations

from proxy_runtime.envoy.translate import CLA, CLUSTER, LISTENER, ROUTE_CONFIG
from proxy_runtime.envoy.xds import Acked, AdsStream, Nacked, Push, Request, Target


def _target(version: str, *, eds: bool = True, rds: bool = True) -> Target:
    return Target(version, {
        CLUSTER: [{"name": "c"}],
        CLA: [{"cluster_name": "c"}] if eds else [],
        LISTENER: [{"name": "l"}],
        ROUTE_CONFIG: [{"name": "r"}] if rds else [],
    })


def _ack(p: Push, names: tuple[str, ...] = ()) -> Request:
    return Request(p.type_url, p.version, p.nonce, names)


def _run_fresh(s: AdsStream, version: str) -> list[str]:
    """A fresh Envoy: subscribes CDS, then EDS after CDS, LDS, then RDS; ACKs everything."""
    order = []
    pushes, _ = s.on_request(Request(CLUSTER))
    (p,) = pushes
    order.append(p.type_url)
    pushes, out = s.on_request(Request(CLA, resource_names=("c",)))
    assert pushes == [] and out == []  # EDS waits for the CDS answer
    pushes, out = s.on_request(_ack(p))
    (p,) = pushes
    order.append(p.type_url)
    pushes, out = s.on_request(_ack(p, ("c",)))
    assert pushes == [] and out == []  # LDS: Envoy has not asked yet
    pushes, _ = s.on_request(Request(LISTENER))
    (p,) = pushes
    order.append(p.type_url)
    s.on_request(Request(ROUTE_CONFIG, resource_names=("r",)))
    pushes, _ = s.on_request(_ack(p))
    (p,) = pushes
    order.append(p.type_url)
    pushes, out = s.on_request(_ack(p, ("r",)))
    assert pushes == [] and out == [Acked(version)]
    return order


def test_push_in_order_and_ack_only_when_every_type_acked() -> None:
    s = AdsStream()
    pushes, out = s.retarget(_target("v1"))
    assert pushes == [] and out == []  # nobody subscribed yet
    assert _run_fresh(s, "v1") == [CLUSTER, CLA, LISTENER, ROUTE_CONFIG]


def test_nack_reports_envoys_error_and_the_rollback_repushes_what_moved() -> None:
    s = AdsStream()
    s.retarget(_target("v1"))
    _run_fresh(s, "v1")
    pushes, _ = s.retarget(_target("v2"))
    (cds,) = pushes
    assert cds.type_url == CLUSTER and cds.version == "v2"
    (eds,), _ = s.on_request(_ack(cds, ()))
    (lds,), _ = s.on_request(_ack(eds, ("c",)))
    pushes, out = s.on_request(Request(LISTENER, "v1", lds.nonce, (), "cannot bind: in use"))
    assert pushes == [] and out == [Nacked("v2", LISTENER, "cannot bind: in use")]
    # back to v1: CDS and EDS had moved to v2 and go back; LDS still holds v1; RDS never moved
    (p,), _ = s.retarget(_target("v1"))
    assert (p.type_url, p.version) == (CLUSTER, "v1")
    (p,), _ = s.on_request(_ack(p))
    assert (p.type_url, p.version) == (CLA, "v1")
    pushes, out = s.on_request(_ack(p, ("c",)))
    assert pushes == [] and out == [Acked("v1")]


def test_stale_answers_are_ignored_and_a_newer_target_replaces_a_push() -> None:
    s = AdsStream()
    s.retarget(_target("v1", eds=False, rds=False))
    (p1,), _ = s.on_request(Request(CLUSTER))
    (p2,), _ = s.retarget(_target("v2", eds=False, rds=False))
    assert p2.version == "v2"
    # Envoy's answer to the v1 push comes late, even a NACK: stale, ignored
    assert s.on_request(Request(CLUSTER, "", p1.nonce, (), "bad")) == ([], [])
    pushes, out = s.on_request(_ack(p2))
    assert pushes == [] and out == []  # LDS not subscribed yet
    (lds,), _ = s.on_request(Request(LISTENER))
    assert s.on_request(_ack(lds)) == ([], [Acked("v2")])


def test_a_reconnecting_envoy_that_holds_the_version_gets_nothing_pushed() -> None:
    s = AdsStream()
    s.retarget(_target("v1"))
    assert s.on_request(Request(CLUSTER, "v1")) == ([], [])
    assert s.on_request(Request(CLA, "v1", "", ("c",))) == ([], [])
    assert s.on_request(Request(LISTENER, "v1")) == ([], [])
    assert s.on_request(Request(ROUTE_CONFIG, "v1", "", ("r",))) == ([], [Acked("v1")])


def test_new_watched_names_are_answered_again() -> None:
    s = AdsStream()
    s.retarget(_target("v1"))
    (cds,), _ = s.on_request(Request(CLUSTER))
    s.on_request(Request(CLA, resource_names=("old",)))
    (eds,), _ = s.on_request(_ack(cds))
    (again,), out = s.on_request(_ack(eds, ("c",)))  # ACK, but now watching "c"
    assert (again.type_url, again.version) == (CLA, "v1") and again.nonce != eds.nonce
    assert out == []
    assert s.on_request(_ack(again, ("c",))) == ([], [])  # then LDS, once subscribed
