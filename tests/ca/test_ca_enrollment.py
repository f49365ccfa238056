"""Joining a proxy end to end: token, CSR, SVID, and what the audit trail says about it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from reconciler.audit import AuditLog
from reconciler.ca import (
    CertificateAuthority,
    CSRRejected,
    Enrollment,
    JoinTokens,
    TokenRefused,
    enroll,
    issue_join_token,
    renew_at,
)
from reconciler.store import open_engine


class World:
    def __init__(self, ca: CertificateAuthority, tokens: JoinTokens, audit: AuditLog) -> None:
        self.ca, self.tokens, self.audit = ca, tokens, audit

    def kinds(self) -> list[str]:
        return [r.kind for r in self.audit.iter_records()]


@pytest.fixture
def world(db_url: str, ca: CertificateAuthority) -> Iterator[World]:
    engine = open_engine(db_url)
    yield World(ca, JoinTokens(engine), AuditLog(engine))
    engine.dispose()


def csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def join(
    world: World, token: str, now: datetime, *, service: str = "web", request: bytes | None = None
) -> Enrollment:
    return enroll(
        ca=world.ca,
        tokens=world.tokens,
        audit=world.audit,
        token=token,
        csr_pem=request if request is not None else csr(),
        service=service,
        namespace="shop",
        peer="10.0.0.7",
        now=now,
    )


def test_a_proxy_joins_once(world: World, now: datetime) -> None:
    issued = issue_join_token(
        world.tokens,
        world.audit,
        actor="admin-token:ab12",
        service="web",
        namespace="shop",
        now=now,
    )
    result = join(world, issued.token, now + timedelta(minutes=1))
    assert result.spiffe_id == "spiffe://mesh.example/ns/shop/sa/web"
    assert result.token_id == issued.id
    assert (
        world.ca.verify_svid(result.svid_chain_pem, now=now + timedelta(minutes=2))
        == result.spiffe_id
    )
    assert result.trust_bundle_pem == world.ca.trust_bundle_pem()
    assert result.renew_at == renew_at(result.svid_chain_pem)
    assert world.kinds() == ["token.issued", "token.used", "svid.issued"]
    issued_record = world.audit.get(1)
    assert issued_record.actor == "admin-token:ab12"
    assert issued_record.data["token_id"] == issued.id
    assert issued.token not in str([r.to_dict() for r in world.audit.iter_records()])
    svid_record = world.audit.get(3)
    assert svid_record.subject == result.spiffe_id
    leaf = x509.load_pem_x509_certificate(result.svid_chain_pem)
    assert svid_record.data["serial"] == format(leaf.serial_number, "x")
    assert svid_record.actor == "join:10.0.0.7"

    with pytest.raises(TokenRefused) as again:
        join(world, issued.token, now + timedelta(minutes=2))
    assert again.value.reason == "used"
    refused = world.audit.tail()
    assert refused is not None and refused.kind == "token.refused"
    assert refused.data == {"reason": "used", "token_id": issued.id, "peer": "10.0.0.7"}
    assert world.audit.verify().ok


@pytest.mark.parametrize(
    ("case", "reason"),
    [("expired", "expired"), ("wrong service", "wrong_service"), ("unknown", "unknown")],
)
def test_refusals_are_audited_and_issue_nothing(
    world: World, now: datetime, case: str, reason: str
) -> None:
    issued = world.tokens.create("web", "shop", now=now, ttl=timedelta(minutes=5))
    token, when, service = issued.token, now, "web"
    if case == "expired":
        when = now + timedelta(minutes=6)
    elif case == "wrong service":
        service = "db"
    else:
        token = "mjt_not-a-real-token"
    with pytest.raises(TokenRefused):
        join(world, token, when, service=service)
    assert world.kinds() == ["token.refused"]
    record = world.audit.get(1)
    assert record.data["reason"] == reason
    assert record.data["token_id"] == (None if case == "unknown" else issued.id)


def test_a_bad_csr_does_not_spend_the_token(world: World, now: datetime) -> None:
    issued = world.tokens.create("web", "shop", now=now)
    with pytest.raises(CSRRejected):
        join(world, issued.token, now, request=b"garbage")
    assert world.kinds() == ["svid.refused"]
    assert world.tokens.get(issued.id).state(now) == "active"
    join(world, issued.token, now)  # the same token still works with a good CSR
    assert world.kinds() == ["svid.refused", "token.used", "svid.issued"]


def test_a_bad_ttl_does_not_spend_the_token(world: World, now: datetime) -> None:
    issued = world.tokens.create("web", "shop", now=now)
    with pytest.raises(ValueError):
        enroll(
            ca=world.ca,
            tokens=world.tokens,
            audit=world.audit,
            token=issued.token,
            csr_pem=csr(),
            service="web",
            namespace="shop",
            now=now,
            ttl=timedelta(days=90),
        )
    assert world.tokens.get(issued.id).state(now) == "active"
    assert world.kinds() == []


def test_works_with_an_intermediate(tmp_path: Path, db_url: str, now: datetime) -> None:
    corp = CertificateAuthority.load_or_create(tmp_path / "corp", "corp.example", now=now)
    assert corp.trust_bundle_pem()
    pem = tmp_path / "corp" / "ca" / "signing.pem"
    ca = CertificateAuthority.load_or_create(
        tmp_path / "mesh", "mesh.example", now=now, root_cert_file=pem, root_key_file=pem
    )
    engine = open_engine(db_url)
    try:
        world = World(ca, JoinTokens(engine), AuditLog(engine))
        issued = world.tokens.create("web", "shop", now=now)
        result = join(world, issued.token, now)
        assert len(x509.load_pem_x509_certificates(result.svid_chain_pem)) == 2
        assert x509.load_pem_x509_certificates(result.trust_bundle_pem) == corp.trust_bundle()
        assert ca.verify_svid(result.svid_chain_pem, now=now) == result.spiffe_id
    finally:
        engine.dispose()
