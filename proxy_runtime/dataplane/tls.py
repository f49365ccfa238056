"""TLS contexts for mTLS from the snapshot's PEM strings, and the peer's SPIFFE ID."""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any

# Reads of TLS connections. With a plain asyncio.Protocol, uvloop's TLS layer decrypts each
# read into a fresh 256 KiB bytes object (an mmap, mremap and munmap per read: measured
# ~3 extra syscalls and page faults per request). As a BufferedProtocol the protocol lends
# it a buffer instead. One buffer per thread (an event loop runs in one thread) serves every
# connection: the loop fills it and calls buffer_updated at once, and buffer_updated copies
# the bytes out before anything else runs.
_per_thread = threading.local()


def _read_buffer() -> memoryview:
    try:
        buf: memoryview = _per_thread.buf
    except AttributeError:
        buf = _per_thread.buf = memoryview(bytearray(64 * 1024))
    return buf


class TlsBufferedReads:
    """Mixin for a protocol class that also derives from asyncio.BufferedProtocol and
    handles its input in data_received(bytes)."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_per_thread.buf[:nbytes]))  # type: ignore[attr-defined]


def peer_spiffe_ids(peercert: dict[str, Any] | None) -> list[str]:
    """URI SANs starting with spiffe:// from ssl's getpeercert() dict (for display; decide with
    svid_spiffe_id)."""
    if not peercert:
        return []
    return [v for k, v in peercert.get("subjectAltName", ()) if k == "URI" and v.startswith("spiffe://")]


NOT_AN_SVID = "peer certificate is not an X509-SVID (exactly one URI SAN, a SPIFFE ID)"


def svid_spiffe_id(peercert: dict[str, Any] | None) -> str | None:
    """The SPIFFE ID of an X509-SVID from ssl's getpeercert() dict: its one URI SAN, which
    must be a spiffe:// URI (X509-SVID spec 4.1). None if the certificate has no URI SAN,
    more than one, or one that is not a SPIFFE ID: such a peer is refused, never taken as
    one of its identities."""
    if not peercert:
        return None
    uris = [v for k, v in peercert.get("subjectAltName", ()) if k == "URI"]
    if len(uris) != 1 or not uris[0].startswith("spiffe://") or len(uris[0]) <= 9:
        return None
    spiffe_id: str = uris[0]
    return spiffe_id


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    # ssl only loads a chain from files: write them to a private temp dir, load, delete.
    # tempfile (with shutil, bz2, lzma: ~0.6 MB) only for a proxy that has an identity
    import tempfile

    with tempfile.TemporaryDirectory(prefix="meshcd-tls-") as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
        ctx.load_cert_chain(cert_path, key_path)


def server_context(cert_pem: str, key_pem: str, trust_bundle_pem: str) -> ssl.SSLContext:
    """Inbound mTLS: present our SVID, require a client certificate the bundle vouches for."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert_pem, key_pem)
    ctx.load_verify_locations(cadata=trust_bundle_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.sni_callback = _remember_sni
    return ctx


def _remember_sni(sslobj: Any, name: str | None, ctx: ssl.SSLContext) -> None:
    """Keep the SNI the client sent on the connection (authorization's connection.sni)."""
    sslobj.meshcd_sni = name


def downstream_sni(sslobj: Any) -> str | None:
    """The SNI an inbound TLS client sent, None without one."""
    return getattr(sslobj, "meshcd_sni", None) if sslobj is not None else None


def client_context(cert_pem: str, key_pem: str, trust_bundle_pem: str) -> ssl.SSLContext:
    """Outbound mTLS origination: present our SVID, verify the peer's chain. Identity is
    checked by SPIFFE ID after the handshake, not by hostname."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_chain(ctx, cert_pem, key_pem)
    ctx.load_verify_locations(cadata=trust_bundle_pem)
    return ctx
