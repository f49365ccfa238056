"""SPIFFE ID construction and validation."""

from __future__ import annotations

import pytest

from reconciler.ca import InvalidSpiffeId, SpiffeId, parse_spiffe_id, spiffe_id


def test_builds_the_workload_id() -> None:
    assert spiffe_id("mesh.example", "shop", "web") == "spiffe://mesh.example/ns/shop/sa/web"
    assert (
        spiffe_id("a-b_c.d", "kube-system", "api.v2") == "spiffe://a-b_c.d/ns/kube-system/sa/api.v2"
    )


@pytest.mark.parametrize(
    ("trust_domain", "namespace", "account"),
    [
        ("Mesh.example", "shop", "web"),
        ("mesh example", "shop", "web"),
        ("", "shop", "web"),
        ("mesh.example", "", "web"),
        ("mesh.example", "Shop", "web"),
        ("mesh.example", "shop", "web/admin"),
        ("mesh.example", "shop", "-web"),
        ("mesh.example", "shop", "web-"),
        ("mesh.example", "shop", "w" * 254),
        ("mesh.example", "shop", ".."),
        ("mesh.example:8080", "shop", "web"),
    ],
)
def test_refuses_bad_parts(trust_domain: str, namespace: str, account: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        spiffe_id(trust_domain, namespace, account)


def test_parses_ids() -> None:
    parsed = parse_spiffe_id("spiffe://mesh.example/ns/shop/sa/web")
    assert parsed == SpiffeId("mesh.example", "/ns/shop/sa/web")
    assert parsed.workload == ("shop", "web")
    assert str(parsed) == "spiffe://mesh.example/ns/shop/sa/web"
    bare = parse_spiffe_id("spiffe://mesh.example")
    assert (bare.path, bare.workload) == ("", None)
    assert parse_spiffe_id("spiffe://td/Some/Path_1").workload is None


@pytest.mark.parametrize(
    "text",
    [
        "https://mesh.example/ns/a/sa/b",
        "SPIFFE://mesh.example/ns/a/sa/b",
        "spiffe://",
        "spiffe://mesh.example/",
        "spiffe://mesh.example//ns",
        "spiffe://mesh.example/ns/./sa",
        "spiffe://mesh.example/ns/../sa",
        "spiffe://mesh.example/ns/a?x=1",
        "spiffe://mesh.example/ns/a#frag",
        "spiffe://user@mesh.example/ns/a",
        "spiffe://mesh.example:443/ns/a",
        "spiffe://MESH.example/ns/a",
        "spiffe://mesh.example/ns/a b",
        "spiffe://mesh.example/ns/ä",
        "spiffe://mesh.example/" + "a" * 2048,
    ],
)
def test_refuses_bad_ids(text: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        parse_spiffe_id(text)
