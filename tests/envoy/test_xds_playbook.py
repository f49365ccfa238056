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
    """A fresh Envoy, as a real one behaves: subscribes CDS and LDS; asks EDS for the new
    clusters before it answers CDS (it answers once they warmed); same for LDS and RDS."""
    order = []
    (cds,), _ = s.on_request(Request(CLUSTER))
    assert s.on_request(Request(LISTENER)) == ([], [])  # listeners wait for the clusters
    (eds,), _ = s.on_request(Request(CLA, resource_names=("c",)))  # EDS right after CDS
    assert s.on_request(_ack(eds, ("c",))) == ([], [])  # CDS not answered yet
    (lds,), out = s.on_request(_ack(cds))
    assert out == []
    (rds,), out = s.on_request(Request(ROUTE_CONFIG, resource_names=("r",)))
    assert out == []
    assert s.on_request(_ack(rds, ("r",))) == ([], [])
    pushes, out = s.on_request(_ack(lds))
    assert pushes == [] and out == [Acked(version)]
    order = [p.type_url for p in (cds, eds, lds, rds)]
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
    (cds, eds) = pushes  # EDS is subscribed already: it follows CDS at once
    assert (cds.type_url, cds.version, eds.type_url) == (CLUSTER, "v2", CLA)
    assert s.on_request(_ack(eds, ("c",))) == ([], [])
    (lds, rds), _ = s.on_request(_ack(cds))
    assert (lds.type_url, rds.type_url) == (LISTENER, ROUTE_CONFIG)
    pushes, out = s.on_request(Request(LISTENER, "v1", lds.nonce, (), "cannot bind: in use"))
    assert pushes == [] and out == [Nacked("v2", LISTENER, "cannot bind: in use")]
    # back to v1: CDS and EDS had moved to v2 and go back; LDS still holds v1; RDS never moved
    (p, q), _ = s.retarget(_target("v1"))
    assert (p.type_url, p.version, q.type_url, q.version) == (CLUSTER, "v1", CLA, "v1")
    assert s.on_request(_ack(q, ("c",))) == ([], [])
    assert s.on_request(_ack(p)) == ([], [Acked("v1")])


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
    (eds,), _ = s.on_request(Request(CLA, resource_names=("old",)))
    (again,), out = s.on_request(_ack(eds, ("c",)))  # ACK, but now watching "c"
    assert (again.type_url, again.version) == (CLA, "v1") and again.nonce != eds.nonce
    assert out == []
    assert s.on_request(_ack(again, ("c",))) == ([], [])
    assert s.on_request(_ack(cds)) == ([], [])  # then LDS, once subscribed


def test_a_refused_cluster_stops_the_push_before_any_listener() -> None:
    s = AdsStream()
    s.retarget(_target("v1", eds=False))
    (cds,), _ = s.on_request(Request(CLUSTER))
    assert s.on_request(Request(LISTENER)) == ([], [])
    pushes, out = s.on_request(Request(CLUSTER, "", cds.nonce, (), "bad cluster"))
    assert pushes == [] and out == [Nacked("v1", CLUSTER, "bad cluster")]


def test_dropped_clusters_go_only_after_the_new_listeners_and_routes_make_before_break() -> None:
    from proxy_runtime.envoy.xds import INTERIM

    s = AdsStream()
    s.retarget(_target("v1"))
    _run_fresh(s, "v1")
    v2 = Target("v2", {CLUSTER: [{"name": "new"}], CLA: [{"cluster_name": "new"}],
                       LISTENER: [{"name": "l"}], ROUTE_CONFIG: [{"name": "r"}]},
                interim={CLUSTER: [{"name": "new"}, {"name": "c"}],
                         CLA: [{"cluster_name": "new"}, {"cluster_name": "c"}]})
    (cds, eds), _ = s.retarget(v2)
    assert cds.version == "v2" + INTERIM and [r["name"] for r in cds.resources] == ["new", "c"]
    assert [r["cluster_name"] for r in eds.resources] == ["new", "c"]
    assert s.on_request(_ack(eds, ("c",))) == ([], [])
    (lds, rds), _ = s.on_request(_ack(cds))
    assert (lds.version, rds.version) == ("v2", "v2")
    assert s.on_request(_ack(rds, ("r",))) == ([], [])
    (cds2, eds2), out = s.on_request(_ack(lds))  # now the old cluster "c" goes
    assert out == [] and (cds2.version, eds2.version) == ("v2", "v2")
    assert [r["name"] for r in cds2.resources] == ["new"]
    assert s.on_request(_ack(eds2, ("c",))) == ([], [])  # (names unchanged: no re-send)
    assert s.on_request(_ack(cds2)) == ([], [Acked("v2")])


def test_a_nack_of_the_interim_clusters_is_a_nack_of_the_version() -> None:
    s = AdsStream()
    s.retarget(_target("v1", eds=False, rds=False))
    s.on_request(Request(CLUSTER))
    v2 = Target("v2", {CLUSTER: [], LISTENER: []}, interim={CLUSTER: [{"name": "c"}]})
    (p,), _ = s.retarget(v2)
    assert s.on_request(Request(CLUSTER, "", p.nonce, (), "no")) == ([], [Nacked("v2", CLUSTER, "no")])
