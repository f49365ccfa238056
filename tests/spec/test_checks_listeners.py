"""MCD132 repeats the renderer's static port layout: keep the two in step, and check that what
it reports is what the proxy itself refuses (compile_snapshot) or could not bind."""

from __future__ import annotations

from pathlib import Path

import pytest

import renderers.targets
from proxy_runtime.config import SnapshotError, compile_snapshot
from reconciler.language.checks import listeners
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from renderers import default_fleet, render

CASE = Path(__file__).resolve().parents[1] / "corpus" / "listener-port-collision"
# mTLS off, so that a snapshot compiles without the identity the controller adds per proxy.
MESH = (
    "apiVersion: meshcd.dev/v1alpha1\nkind: Mesh\nmetadata: {name: mesh}\n"
    "spec:\n  trustDomain: corp.example\n  mtls: {mode: DISABLE}\n"
)


def _repo(path: Path, svc: str) -> Path:
    path.mkdir(exist_ok=True)
    (path / "mesh.yaml").write_text(MESH)
    (path / "svc.yaml").write_text(svc)
    return path


def test_layout_constants_match_the_renderer() -> None:
    assert listeners.OUTBOUND_BASE == renderers.targets.OUTBOUND_BASE
    assert listeners.APP_PORT_OFFSET == renderers.targets.APP_PORT_OFFSET


def _refused_and_shared(path: Path) -> tuple[set[str], set[int]]:
    """Proxy ids whose snapshot the proxy refuses; ports two proxies on 127.0.0.1 both claim."""
    model = validate(DirectorySource(path)).model
    assert model is not None
    fleet = default_fleet(model)
    result = render(model, fleet)
    refused: set[str] = set()
    owners: dict[int, str] = {}
    shared: set[int] = set()
    for proxy in fleet:
        snap = result.snapshots[proxy.id]
        try:
            compile_snapshot(snap.snapshot)
        except SnapshotError:
            refused.add(proxy.id)
        assert proxy.ports is not None
        if proxy.ports.inbound[0].app_address.startswith("127.0.0.1:"):
            ports = [p.listen for p in proxy.ports.inbound] + [proxy.ports.outbound]
            for port in set(ports):
                if owners.setdefault(port, proxy.id) != proxy.id:
                    shared.add(port)
    return refused, shared


def test_what_mcd132_reports_the_proxy_refuses_or_cannot_bind(tmp_path: Path) -> None:
    refused, shared = _refused_and_shared(_repo(tmp_path / "bad", (CASE / "svc.yaml").read_text()))
    # web endpoint 1 (inbound on its own outbound port) and web endpoint 2 (app port > 65535)
    assert refused == {"web.prod-1", "web.prod-2"}
    assert shared == {9302, 9303}  # api-0's admin port is api-1's http; api-1's admin, web-0's

    svc = (CASE / "svc.yaml").read_text()
    for bad, good in [("9302\n", "9312\n"), ("9303", "9323"), ("20004", "9333"), ("65000", "9343")]:
        svc = svc.replace(f"127.0.0.1:{bad}", f"127.0.0.1:{good}")
    fixed = _repo(tmp_path / "fixed", svc)
    result = validate(DirectorySource(fixed))
    assert [f for f in result.findings if f.code == "MCD132"] == []
    assert _refused_and_shared(fixed) == (set(), set())


@pytest.mark.parametrize("port", [65535, 64536])
def test_listener_or_app_port_past_65535(tmp_path: Path, port: int) -> None:
    _repo(
        tmp_path,
        "apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: {name: web, namespace: prod}\n"
        "spec:\n  ports: [{name: http, number: 80, protocol: http}]\n"
        f"  endpoints: [{{address: '127.0.0.1:{port}'}}]\n"
    )
    codes = [f.code for f in validate(DirectorySource(tmp_path)).findings]
    assert codes == ["MCD132"]
    refused, _ = _refused_and_shared(tmp_path)
    assert refused == {"web.prod-0"}


@pytest.mark.parametrize(("endpoint_port", "collides"), [(30000, True), (20000, False)])
def test_mcd132_follows_the_mesh_outbound_port_base(tmp_path: Path, endpoint_port: int,
                                                     collides: bool) -> None:
    """The first proxy's outbound port is the Mesh's outboundPortBase, not always 20000."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "mesh.yaml").write_text(MESH.replace("  mtls:", "  outboundPortBase: 30000\n  mtls:"))
    (tmp_path / "svc.yaml").write_text(
        "apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: {name: web, namespace: prod}\n"
        "spec:\n  ports: [{name: http, number: 80, protocol: http}]\n"
        f"  endpoints: [{{address: '127.0.0.1:{endpoint_port}'}}]\n")
    result = validate(DirectorySource(tmp_path))
    assert result.model is not None, result.findings
    assert any(f.code == "MCD132" for f in result.findings) is collides, result.findings
