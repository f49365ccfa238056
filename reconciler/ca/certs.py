"""Building the CA's certificates with `cryptography`. No file I/O; time is passed in.

Keys are EC P-256: what SPIFFE implementations, Envoy and every TLS stack support, with
small keys and fast signatures. A root the user brings may be RSA, EC or Ed25519.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.ca.errors import CSRRejected

# Leaves start this much before "now", so a peer whose clock is a little behind accepts them.
CLOCK_SKEW = timedelta(minutes=5)
MIN_RSA_BITS = 2048
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519/Ed448 sign the message itself; the others sign a SHA-256 digest.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def check_public_key(key: CertificatePublicKeyTypes) -> CertificateIssuerPublicKeyTypes:
    """Accept the key types we will certify: EC P-256/P-384, Ed25519, RSA >= 2048 bits."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _ALLOWED_CURVES):
            raise CSRRejected(f"EC curve {key.curve.name} is not accepted (use P-256 or P-384)")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CSRRejected(f"RSA key of {key.key_size} bits is too small (min {MIN_RSA_BITS})")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise CSRRejected(f"key type {type(key).__name__} is not accepted")


def _ca_name(trust_domain: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshcd"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_extensions(
    builder: x509.CertificateBuilder, trust_domain: str, path_length: int | None
) -> x509.CertificateBuilder:
    return (
        builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        )
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True
        )
        # SPIFFE: a signing certificate may carry the trust domain's own ID.
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
    )


def make_root(
    key: CertificateIssuerPrivateKeyTypes, trust_domain: str, *, now: datetime, ttl: timedelta
) -> x509.Certificate:
    """A self-signed root for `trust_domain`."""
    name = _ca_name(trust_domain, f"meshcd root CA {trust_domain}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ttl)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    builder = _ca_extensions(builder, trust_domain, path_length=None)
    return builder.sign(key, signature_hash(key))


def make_intermediate(
    public_key: CertificateIssuerPublicKeyTypes,
    trust_domain: str,
    *,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
    ttl: timedelta,
) -> x509.Certificate:
    """A signing CA under `issuer` that may sign leaves only (pathLen 0)."""
    not_after = min(now + ttl, issuer.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_ca_name(trust_domain, f"meshcd intermediate CA {trust_domain}"))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CLOCK_SKEW, issuer.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
    )
    builder = _ca_extensions(builder, trust_domain, path_length=0)
    return builder.sign(issuer_key, signature_hash(issuer_key))


def make_leaf(
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
    ttl: timedelta,
    uri: str | None = None,
    dns_names: Sequence[str] = (),
    ips: Sequence[IPAddress] = (),
    client_auth: bool = True,
) -> x509.Certificate:
    """An end-entity certificate: cA=false, digitalSignature, EKU serverAuth (+clientAuth).

    The lifetime is clipped to the issuer's, and starts `CLOCK_SKEW` early (not before the
    issuer's own start).
    """
    names: list[x509.GeneralName] = []
    if uri is not None:
        names.append(x509.UniformResourceIdentifier(uri))
    names.extend(x509.DNSName(name) for name in dns_names)
    names.extend(x509.IPAddress(ip) for ip in ips)
    if not names:
        raise ValueError("a leaf certificate needs at least one name")
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    rsa_key = isinstance(public_key, rsa.RSAPublicKey)
    not_before = max(now - CLOCK_SKEW, issuer.not_valid_before_utc)
    not_after = min(now + ttl, issuer.not_valid_after_utc)
    if not_after <= now:
        raise ValueError("the issuing CA expires before the certificate would start")
    builder = (
        x509.CertificateBuilder()
        # A minimal subject; the identity is the URI SAN (SPIFFE ignores the subject).
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshcd")]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # RSA keys may also be used for TLS 1.2 RSA key exchange (keyEncipherment).
        .add_extension(_key_usage(digital_signature=True, key_encipherment=rsa_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        public_key = issuer.public_key()
        if not isinstance(
            public_key,
            ec.EllipticCurvePublicKey
            | rsa.RSAPublicKey
            | ed25519.Ed25519PublicKey
            | ed448.Ed448PublicKey,
        ):
            raise
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)


def lifetime_midpoint(cert: x509.Certificate) -> datetime:
    """notBefore + half the lifetime: when a holder should renew."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) / 2
