"""The built-in CA: files on disk, what an SVID contains, bad CSRs, chain verification."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.ca import (
    CAConfigError,
    CertificateAuthority,
    CSRRejected,
    InvalidSpiffeId,
    SVIDRejected,
    renew_at,
    spiffe_id,
)
from reconciler.ca import files as ca_files
from reconciler.ca.certs import make_root

TD = "mesh.example"
WEB = spiffe_id(TD, "shop", "web")


def csr_pem(
    key: Any, *, sans: list[x509.GeneralName] | None = None, algorithm: Any = None
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker-chosen")])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if algorithm is None and not isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def new_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def load(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- files -------------------------------------------------------------------------------


def test_creates_a_private_ca_in_the_data_dir(tmp_path: Path, now: datetime) -> None:
    data = tmp_path / "data"
    ca = CertificateAuthority.load_or_create(data, TD, now=now)
    ca_dir = data / "ca"
    assert sorted(p.name for p in ca_dir.iterdir()) == [".lock", "bundle.pem", "signing.pem"]
    assert mode(data) == 0o700
    assert mode(ca_dir) == 0o700
    assert mode(ca_dir / "signing.pem") == 0o600  # holds the key
    root = load(ca.trust_bundle_pem())
    assert len(root) == 1
    assert root[0] == ca.signing_certificate  # self-signed: the root signs
    key = serialization.load_pem_private_key((ca_dir / "signing.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    constraints = root[0].extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca


def test_an_existing_data_dir_is_tightened_to_0700(tmp_path: Path, now: datetime) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    CertificateAuthority.load_or_create(data, TD, now=now)
    assert mode(data) == 0o700


def test_reloading_keeps_the_same_ca(tmp_path: Path, now: datetime) -> None:
    first = CertificateAuthority.load_or_create(tmp_path, TD, now=now)
    second = CertificateAuthority.load_or_create(tmp_path, TD, now=now + timedelta(days=30))
    assert second.trust_bundle_pem() == first.trust_bundle_pem()
    assert second.bundle_fingerprint() == first.bundle_fingerprint()
    issued = second.issue_svid(csr_pem(new_ec()), WEB, now=now)
    assert first.verify_svid(issued, now=now) == WEB


def test_refuses_a_different_trust_domain(tmp_path: Path, now: datetime) -> None:
    CertificateAuthority.load_or_create(tmp_path, TD, now=now)
    with pytest.raises(CAConfigError, match="trust domain"):
        CertificateAuthority.load_or_create(tmp_path, "other.example", now=now)


def test_refuses_a_key_that_does_not_match(tmp_path: Path, now: datetime) -> None:
    CertificateAuthority.load_or_create(tmp_path, TD, now=now)
    other = new_ec().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signing = tmp_path / "ca" / "signing.pem"
    cert_only = signing.read_bytes().split(b"-----BEGIN PRIVATE KEY-----")[0]
    signing.write_bytes(cert_only + other)
    with pytest.raises(CAConfigError, match="does not belong"):
        CertificateAuthority.load_or_create(tmp_path, TD, now=now)


@pytest.mark.parametrize(
    "damage", ["missing key", "garbage cert", "empty bundle", "foreign bundle", "missing bundle"]
)
def test_refuses_damaged_files(tmp_path: Path, now: datetime, damage: str) -> None:
    CertificateAuthority.load_or_create(tmp_path, TD, now=now)
    ca_dir = tmp_path / "ca"
    signing = ca_dir / "signing.pem"
    if damage == "missing key":
        signing.write_bytes(signing.read_bytes().split(b"-----BEGIN PRIVATE KEY-----")[0])
    elif damage == "garbage cert":
        key_part = signing.read_bytes().split(b"-----END CERTIFICATE-----\n")[1]
        signing.write_bytes(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" + key_part
        )
    elif damage == "missing bundle":
        (ca_dir / "bundle.pem").unlink()
    elif damage == "empty bundle":
        (ca_dir / "bundle.pem").write_bytes(b"")
    else:
        foreign = CertificateAuthority.load_or_create(tmp_path / "other", TD, now=now)
        (ca_dir / "bundle.pem").write_bytes(foreign.trust_bundle_pem())
    with pytest.raises(CAConfigError):
        CertificateAuthority.load_or_create(tmp_path, TD, now=now)


def test_refuses_an_expired_ca(tmp_path: Path, now: datetime) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path, TD, now=now)
    later = ca.signing_certificate.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(CAConfigError, match="expired"):
        CertificateAuthority.load_or_create(tmp_path, TD, now=later)


def test_refuses_bad_arguments(tmp_path: Path, now: datetime) -> None:
    with pytest.raises(InvalidSpiffeId):
        CertificateAuthority.load_or_create(tmp_path, "Not Valid", now=now)
    with pytest.raises(ValueError, match="timezone"):
        CertificateAuthority.load_or_create(tmp_path, TD, now=now.replace(tzinfo=None))
    with pytest.raises(CAConfigError, match="both"):
        CertificateAuthority.load_or_create(tmp_path, TD, now=now, root_cert_file=tmp_path / "x")


def test_an_interrupted_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "signing.pem"
    ca_files.atomic_write(target, b"old", mode=0o600)

    def crash(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ca_files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        ca_files.atomic_write(target, b"new", mode=0o600)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["signing.pem"]  # no temp file left
    assert mode(target) == 0o600


# -- SVIDs -------------------------------------------------------------------------------


def test_an_svid_follows_the_spiffe_profile(ca: CertificateAuthority, now: datetime) -> None:
    key = new_ec()
    chain = load(ca.issue_svid(csr_pem(key), WEB, now=now))
    assert len(chain) == 1  # self-signed mode: the root is in the bundle, no intermediate
    leaf = chain[0]
    ext = leaf.extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
    assert len(list(san)) == 1
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert leaf.not_valid_before_utc == now - timedelta(minutes=5)
    assert leaf.not_valid_after_utc == now + timedelta(hours=24)
    assert leaf.serial_number > 0
    assert leaf.public_key() == key.public_key()
    leaf.verify_directly_issued_by(ca.signing_certificate)
    assert "attacker-chosen" not in leaf.subject.rfc4514_string()


def test_serials_are_random(ca: CertificateAuthority, now: datetime) -> None:
    serials = {
        load(ca.issue_svid(csr_pem(new_ec()), WEB, now=now))[0].serial_number for _ in range(5)
    }
    assert len(serials) == 5
    assert all(s.bit_length() > 64 for s in serials)


def test_the_csrs_requested_names_are_ignored(ca: CertificateAuthority, now: datetime) -> None:
    requested: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(TD, "kube-system", "admin")),
        x509.DNSName("controller.example"),
    ]
    leaf = load(ca.issue_svid(csr_pem(new_ec(), sans=requested), WEB, now=now))[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(WEB)]


def test_other_key_types(ca: CertificateAuthority, now: datetime) -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    assert ca.verify_svid(ca.issue_svid(csr_pem(ed), WEB, now=now), now=now) == WEB
    big = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = load(ca.issue_svid(csr_pem(big), WEB, now=now))[0]
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_a_forged_csr_signature_is_refused(ca: CertificateAuthority, now: datetime) -> None:
    der = bytearray(
        x509.load_pem_x509_csr(csr_pem(new_ec())).public_bytes(serialization.Encoding.DER)
    )
    der[-3] ^= 0x01  # inside the signature's s value: still parses, no longer verifies
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CSRRejected, match="signature"):
        ca.issue_svid(forged, WEB, now=now)


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"not a csr",
        lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        lambda: csr_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        lambda: csr_pem(ec.generate_private_key(ec.SECP521R1())),
    ],
    ids=["garbage", "bad-base64-body", "rsa-1024", "p-521"],
)
def test_bad_csrs_are_refused(ca: CertificateAuthority, now: datetime, make: Any) -> None:
    with pytest.raises(CSRRejected):
        ca.issue_svid(make(), WEB, now=now)


@pytest.mark.parametrize(
    "identity",
    ["spiffe://other.example/ns/shop/sa/web", f"spiffe://{TD}", "https://mesh.example/x", "web"],
)
def test_ids_outside_the_trust_domain_are_refused(
    ca: CertificateAuthority, now: datetime, identity: str
) -> None:
    with pytest.raises(InvalidSpiffeId):
        ca.issue_svid(csr_pem(new_ec()), identity, now=now)


def test_ttl_is_bounded_and_clipped_to_the_ca(tmp_path: Path, now: datetime) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path, TD, now=now, root_ttl=timedelta(hours=2))
    for bad in (timedelta(0), timedelta(seconds=30), timedelta(days=31)):
        with pytest.raises(ValueError, match="ttl"):
            ca.issue_svid(csr_pem(new_ec()), WEB, now=now, ttl=bad)
    leaf = load(ca.issue_svid(csr_pem(new_ec()), WEB, now=now))[0]
    assert leaf.not_valid_after_utc == ca.signing_certificate.not_valid_after_utc
    with pytest.raises(ValueError, match="timezone"):
        ca.issue_svid(csr_pem(new_ec()), WEB, now=now.replace(tzinfo=None))


def test_renew_at_is_half_the_lifetime(ca: CertificateAuthority, now: datetime) -> None:
    pem = ca.issue_svid(csr_pem(new_ec()), WEB, now=now, ttl=timedelta(hours=10))
    leaf = load(pem)[0]
    start = now - timedelta(minutes=5)
    assert renew_at(pem) == start + (now + timedelta(hours=10) - start) / 2
    assert renew_at(leaf) == CertificateAuthority.renew_at(leaf) == renew_at(pem.decode())


# -- verifying -----------------------------------------------------------------------------


def test_verify_returns_the_id(ca: CertificateAuthority, now: datetime) -> None:
    pem = ca.issue_svid(csr_pem(new_ec()), WEB, now=now)
    assert ca.verify_svid(pem, now=now) == WEB
    assert ca.verify_svid(load(pem), now=now + timedelta(hours=23)) == WEB


@pytest.mark.parametrize("offset", [timedelta(hours=24, seconds=1), timedelta(minutes=-6)])
def test_verify_refuses_outside_the_validity_period(
    ca: CertificateAuthority, now: datetime, offset: timedelta
) -> None:
    pem = ca.issue_svid(csr_pem(new_ec()), WEB, now=now)
    with pytest.raises(SVIDRejected):
        ca.verify_svid(pem, now=now + offset)


def test_verify_refuses_another_cas_svid(
    ca: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    other = CertificateAuthority.load_or_create(tmp_path / "other", TD, now=now)
    with pytest.raises(SVIDRejected, match="does not verify"):
        ca.verify_svid(other.issue_svid(csr_pem(new_ec()), WEB, now=now), now=now)


def signed_by_ca(
    ca: CertificateAuthority,
    tmp_path: Path,
    now: datetime,
    names: list[x509.GeneralName],
    *,
    is_ca: bool = False,
) -> bytes:
    """A certificate our CA's key signed, but not through issue_svid (a misissued one)."""
    signing_key = serialization.load_pem_private_key(
        (tmp_path / "data" / "ca" / "signing.pem").read_bytes(), None
    )
    assert isinstance(signing_key, ec.EllipticCurvePrivateKey)
    key = new_ec()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]))
        .issuer_name(ca.signing_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(signing_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            [
                x509.UniformResourceIdentifier(WEB),
                x509.UniformResourceIdentifier(spiffe_id(TD, "a", "b")),
            ],
            "exactly one URI",
        ),
        ([x509.DNSName("web.shop")], "exactly one URI"),
        ([x509.UniformResourceIdentifier("https://web.shop/")], "not a valid SPIFFE ID"),
        ([x509.UniformResourceIdentifier("spiffe://other.example/ns/shop/sa/web")], "trust domain"),
    ],
)
def test_verify_refuses_misissued_names(
    ca: CertificateAuthority,
    tmp_path: Path,
    now: datetime,
    names: list[x509.GeneralName],
    message: str,
) -> None:
    pem = signed_by_ca(ca, tmp_path, now, names)
    with pytest.raises(SVIDRejected, match=message):
        ca.verify_svid(pem, now=now)


def test_verify_refuses_a_ca_certificate_as_leaf(
    ca: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    pem = signed_by_ca(ca, tmp_path, now, [x509.UniformResourceIdentifier(WEB)], is_ca=True)
    with pytest.raises(SVIDRejected, match="CA"):
        ca.verify_svid(pem, now=now)
    with pytest.raises(SVIDRejected):
        ca.verify_svid(ca.trust_bundle_pem(), now=now)


def test_verify_refuses_a_server_only_certificate(ca: CertificateAuthority, now: datetime) -> None:
    server = ca.issue_server_cert(["controller.local"], now=now)
    with pytest.raises(SVIDRejected):
        ca.verify_svid(server.cert_chain_pem, now=now)


def test_verify_refuses_garbage(ca: CertificateAuthority, now: datetime) -> None:
    for blob in (b"", b"junk", "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n"):
        with pytest.raises(SVIDRejected):
            ca.verify_svid(blob, now=now)
    with pytest.raises(SVIDRejected):
        ca.verify_svid([], now=now)


# -- server certificates ---------------------------------------------------------------------


def test_server_certificate(ca: CertificateAuthority, now: datetime) -> None:
    creds = ca.issue_server_cert(
        ["controller.local", "localhost"],
        ["127.0.0.1", "::1"],
        now=now,
        spiffe_id=f"spiffe://{TD}/meshcd/controller",
    )
    leaf = load(creds.cert_chain_pem)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["controller.local", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{TD}/meshcd/controller"
    ]
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    key = serialization.load_pem_private_key(creds.key_pem, None)
    assert key.public_key() == leaf.public_key()
    assert creds.not_after == now + timedelta(days=30)
    assert creds.renew_at == renew_at(leaf)


def test_server_certificate_bad_input(ca: CertificateAuthority, now: datetime) -> None:
    with pytest.raises(ValueError):
        ca.issue_server_cert([], [], now=now)
    with pytest.raises(ValueError):
        ca.issue_server_cert(["bad host"], now=now)
    with pytest.raises(ValueError):
        ca.issue_server_cert([], ["300.1.1.1"], now=now)
    with pytest.raises(InvalidSpiffeId):
        ca.issue_server_cert(["x"], now=now, spiffe_id="spiffe://other.example/c")


# -- under a user's root -----------------------------------------------------------------------


@pytest.fixture
def user_root(tmp_path: Path, now: datetime) -> tuple[Path, Path, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = make_root(key, "corp.example", now=now - timedelta(days=1), ttl=timedelta(days=3650))
    cert_file, key_file = tmp_path / "root.crt", tmp_path / "root.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, cert


def test_intermediate_under_a_user_root(
    tmp_path: Path, now: datetime, user_root: tuple[Path, Path, x509.Certificate]
) -> None:
    cert_file, key_file, root = user_root
    data = tmp_path / "data"
    ca = CertificateAuthority.load_or_create(
        data, TD, now=now, root_cert_file=cert_file, root_key_file=key_file
    )
    assert load(ca.trust_bundle_pem()) == [root]
    intermediate = ca.signing_certificate
    assert intermediate != root
    intermediate.verify_directly_issued_by(root)
    assert (
        intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        == 0
    )
    # the root key stays where the user keeps it
    root_key_bytes = key_file.read_bytes().strip()
    assert all(root_key_bytes not in p.read_bytes() for p in (data / "ca").iterdir())
    chain = load(ca.issue_svid(csr_pem(new_ec()), WEB, now=now))
    assert chain[1:] == [intermediate]
    assert ca.verify_svid(chain, now=now) == WEB
    assert ca.verify_svid(chain[:1], now=now) == WEB  # leaf alone: our intermediate is known
    again = CertificateAuthority.load_or_create(
        data, TD, now=now + timedelta(days=1), root_cert_file=cert_file, root_key_file=key_file
    )
    assert again.signing_certificate == intermediate


def test_two_processes_starting_at_once_agree_on_one_ca(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from reconciler.ca import CertificateAuthority\n"
        "ca = CertificateAuthority.load_or_create(sys.argv[1], 'mesh.example', now=datetime.now(UTC))\n"
        "print(ca.bundle_fingerprint())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "data")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    assert (
        CertificateAuthority.load_or_create(
            tmp_path / "data", TD, now=datetime.now(UTC)
        ).bundle_fingerprint()
        == outputs[0][0].strip()
    )


def test_the_intermediate_is_reissued_past_half_its_life(
    tmp_path: Path, now: datetime, user_root: tuple[Path, Path, x509.Certificate]
) -> None:
    cert_file, key_file, root = user_root
    data = tmp_path / "data"
    first = CertificateAuthority.load_or_create(
        data, TD, now=now, root_cert_file=cert_file, root_key_file=key_file
    )
    later = renew_at(first.signing_certificate) + timedelta(seconds=1)
    second = CertificateAuthority.load_or_create(
        data, TD, now=later, root_cert_file=cert_file, root_key_file=key_file
    )
    assert second.signing_certificate != first.signing_certificate
    second.signing_certificate.verify_directly_issued_by(root)
    old_svid = first.issue_svid(csr_pem(new_ec()), WEB, now=later)
    assert second.verify_svid(old_svid, now=later) == WEB  # same root: old SVIDs still verify


def test_user_root_problems_are_refused(
    tmp_path: Path, now: datetime, user_root: tuple[Path, Path, x509.Certificate]
) -> None:
    cert_file, key_file, _ = user_root
    data = tmp_path / "data"
    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_bytes(
        new_ec().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CAConfigError, match="not the key"):
        CertificateAuthority.load_or_create(
            data, TD, now=now, root_cert_file=cert_file, root_key_file=wrong_key
        )
    with pytest.raises(CAConfigError, match="cannot load"):
        CertificateAuthority.load_or_create(
            data, TD, now=now, root_cert_file=tmp_path / "nope", root_key_file=key_file
        )
    with pytest.raises(CAConfigError, match="not valid now"):
        CertificateAuthority.load_or_create(
            data,
            TD,
            now=now + timedelta(days=4000),
            root_cert_file=cert_file,
            root_key_file=key_file,
        )
    # a leaf is not a root
    ca = CertificateAuthority.load_or_create(tmp_path / "self", TD, now=now)
    server = ca.issue_server_cert(["x"], now=now)
    leaf_file, leaf_key = tmp_path / "leaf.crt", tmp_path / "leaf.key"
    leaf_file.write_bytes(server.cert_chain_pem)
    leaf_key.write_bytes(server.key_pem)
    with pytest.raises(CAConfigError, match="not a CA"):
        CertificateAuthority.load_or_create(
            data, TD, now=now, root_cert_file=leaf_file, root_key_file=leaf_key
        )


def test_a_ca_made_without_the_root_is_not_silently_switched(
    tmp_path: Path, now: datetime, user_root: tuple[Path, Path, x509.Certificate]
) -> None:
    cert_file, key_file, _ = user_root
    CertificateAuthority.load_or_create(tmp_path / "data", TD, now=now)
    with pytest.raises(CAConfigError, match="not made under the given root"):
        CertificateAuthority.load_or_create(
            tmp_path / "data", TD, now=now, root_cert_file=cert_file, root_key_file=key_file
        )


def plain_root(tmp_path: Path, now: datetime, usage: x509.KeyUsage | None) -> tuple[Path, Path]:
    """A root like `openssl req -x509` makes: basicConstraints and key ids, keyUsage optional."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corp Root")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    cert_file, key_file = tmp_path / "plain.crt", tmp_path / "plain.key"
    cert_file.write_bytes(
        builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_a_root_without_key_usage_works(tmp_path: Path, now: datetime) -> None:
    cert_file, key_file = plain_root(tmp_path, now, None)
    ca = CertificateAuthority.load_or_create(
        tmp_path / "data", TD, now=now, root_cert_file=cert_file, root_key_file=key_file
    )
    assert ca.verify_svid(ca.issue_svid(csr_pem(new_ec()), WEB, now=now), now=now) == WEB


def test_a_root_whose_key_usage_forbids_signing_is_refused(tmp_path: Path, now: datetime) -> None:
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert_file, key_file = plain_root(tmp_path, now, usage)
    with pytest.raises(CAConfigError, match="keyUsage"):
        CertificateAuthority.load_or_create(
            tmp_path / "data", TD, now=now, root_cert_file=cert_file, root_key_file=key_file
        )


def test_renewal_keeps_the_identity_and_takes_the_new_key(
    ca: CertificateAuthority, now: datetime
) -> None:
    current = ca.issue_svid(csr_pem(new_ec()), WEB, now=now)
    half = renew_at(current)
    new_key = new_ec()
    renewed = ca.renew_svid(current, csr_pem(new_key), now=half)
    leaf = load(renewed)[0]
    assert ca.verify_svid(renewed, now=half) == WEB
    assert leaf.public_key() == new_key.public_key()
    assert leaf.not_valid_before_utc == half - timedelta(minutes=5)


def test_renewal_needs_a_valid_svid_of_ours(
    ca: CertificateAuthority, tmp_path: Path, now: datetime
) -> None:
    current = ca.issue_svid(csr_pem(new_ec()), WEB, now=now)
    with pytest.raises(SVIDRejected):
        ca.renew_svid(current, csr_pem(new_ec()), now=now + timedelta(hours=25))
    other = CertificateAuthority.load_or_create(tmp_path / "other", TD, now=now)
    with pytest.raises(SVIDRejected):
        ca.renew_svid(other.issue_svid(csr_pem(new_ec()), WEB, now=now), csr_pem(new_ec()), now=now)
    with pytest.raises(CSRRejected):
        ca.renew_svid(current, b"garbage", now=now)
