"""TLS contexts of the controller's fleet and bootstrap listeners.

The ssl module loads certificates and keys only from files, so the PEMs are written to a
private temporary directory, loaded, and removed at once.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from reconciler.ca import ServerCredentials


def server_context(credentials: ServerCredentials, *, client_ca_pem: bytes | None) -> ssl.SSLContext:
    """A TLS 1.2+ server context serving `credentials`. With `client_ca_pem`, a client
    certificate chaining to it is required (mTLS); without, the server is authenticated only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="meshcd-tls-") as tmp:
        os.chmod(tmp, 0o700)
        cert = Path(tmp) / "cert.pem"
        key = Path(tmp) / "key.pem"
        cert.write_bytes(credentials.cert_chain_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(credentials.key_pem)
        ctx.load_cert_chain(cert, key)
    if client_ca_pem is not None:
        # proxies hold one long stream: no resumption tickets (and no per-stream session)
        ctx.num_tickets = 0
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
    return ctx


