"""The static fleet's outbound ports: the Mesh's `outboundPortBase` (default 20000) + index.

A test (or a second mesh on one host) picks a free range instead of sharing 20000, 20001, ...
with every other static mesh on the machine (issue 17, finding 16)."""

from __future__ import annotations

from pathlib import Path

from reconciler.language.model import ConfigModel
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import ValidationResult, validate
from renderers import default_fleet, render

MESH = """apiVersion: meshcd.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec:
  trustDomain: ports.test
"""
SERVICES = """---
apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports: [{name: http, number: 8080}]
  endpoints: [{address: "127.0.0.1:9001"}]
---
apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, number: 8080}]
  endpoints: [{address: "127.0.0.1:9002"}, {address: "127.0.0.1:9003"}]
  egress: [api]
"""


def _validate(tmp_path: Path, mesh_extra: str = "") -> ValidationResult:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "mesh.yaml").write_text(MESH + mesh_extra)
    (repo / "services.yaml").write_text(SERVICES)
    return validate(DirectorySource(repo))


def _model(tmp_path: Path, mesh_extra: str = "") -> ConfigModel:
    result = _validate(tmp_path, mesh_extra)
    assert result.ok, [str(f) for f in result.errors]
    return result.model


def _outbound(model: ConfigModel) -> dict[str, int]:
    return {p.id: p.ports.outbound for p in default_fleet(model) if p.ports is not None}


def test_outbound_ports_default_to_20000_plus_index(tmp_path: Path) -> None:
    assert _outbound(_model(tmp_path)) == {
        "api.shop-0": 20000, "web.shop-0": 20001, "web.shop-1": 20002}


def test_outbound_port_base_moves_every_static_proxy(tmp_path: Path) -> None:
    model = _model(tmp_path, "  outboundPortBase: 41230\n")
    assert _outbound(model) == {"api.shop-0": 41230, "web.shop-0": 41231, "web.shop-1": 41232}
    # the rendered snapshot listens there: what the proxy binds
    snap = render(model, default_fleet(model)).snapshots["web.shop-1"].snapshot
    assert snap.outbound is not None and snap.outbound.port == 41232


def test_outbound_port_base_must_be_a_port(tmp_path: Path) -> None:
    for bad in ("0", "65536", "'20000'"):
        result = _validate(tmp_path, f"  outboundPortBase: {bad}\n")
        assert not result.ok
        assert any("outboundPortBase" in str(f) for f in result.errors), [
            str(f) for f in result.errors]
