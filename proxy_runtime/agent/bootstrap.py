"""Joining: make a key, send a CSR with the join token, keep the SVID (docs/fleet.md).

Blocking (stdlib http.client over TLS); the CLI runs it before the event loop starts.
First contact is trusted by a pin: either the trust bundle itself (`--ca-file`) or the
SHA-256 fingerprint of its first certificate (`--ca-fingerprint`), checked against the
bundle fetched from `GET /bundle` before anything secret is sent.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from proxy_runtime.agent.errors import BootstrapError, BootstrapRefused, TrustError
from proxy_runtime.agent.identity import (
    Identity,
    StateDir,
    bundle_fingerprint,
    make_csr,
    new_key,
    parse_fingerprint,
)

TIMEOUT = 15.0
MAX_RESPONSE = 1024 * 1024


@dataclass(frozen=True)
class Joined:
    identity: Identity
    fleet_url: str


def _split(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise BootstrapRefused(f"the controller URL must be https://host:port, not {url!r}", status=0)
    return parts.hostname, parts.port or 443


def _request(url: str, ctx: ssl.SSLContext, method: str, path: str,
             body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    host, port = _split(url)
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=TIMEOUT)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read(MAX_RESPONSE + 1)
        status = response.status
    except ssl.SSLCertVerificationError as exc:
        raise TrustError(f"the controller's certificate does not verify against the pinned "
                         f"bundle: {exc.verify_message or exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise BootstrapError(f"cannot reach {url}: {exc}") from None
    finally:
        conn.close()
    if len(raw) > MAX_RESPONSE:
        raise BootstrapError("the controller's answer is too large")
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {"error": raw[:200].decode("utf-8", "replace")}
    if not isinstance(doc, dict):
        doc = {"error": "not a JSON object"}
    return status, doc


def fetch_pinned_bundle(url: str, fingerprint: str) -> str:
    """GET /bundle without verifying (we have nothing to verify with yet), then accept the
    bundle only if its first certificate has the pinned fingerprint."""
    want = parse_fingerprint(fingerprint)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    status, doc = _request(url, ctx, "GET", "/bundle")
    bundle = doc.get("trustBundlePem")
    if status != 200 or not isinstance(bundle, str):
        raise BootstrapError(f"GET /bundle answered {status}: {doc.get('error', doc)}")
    got = bundle_fingerprint(bundle)
    if got != want:
        raise TrustError(f"CA fingerprint mismatch: the controller's bundle is sha256:{got}, "
                         f"the pin is sha256:{want}")
    return bundle


def join(url: str, token: str, service: str, namespace: str, bundle_pem: str,
         state_dir: StateDir) -> Joined:
    """Make a key, POST /bootstrap over TLS verified against `bundle_pem`, save the SVID."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=bundle_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise TrustError(f"the trust bundle is not usable: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    key = new_key()
    status, doc = _request(url, ctx, "POST", "/bootstrap", {
        "token": token, "service": service, "namespace": namespace,
        "csrPem": make_csr(key, f"{service}.{namespace}")})
    if status == 403:
        raise BootstrapRefused(str(doc.get("error", "join token refused")), doc.get("reason"), 403)
    if 400 <= status < 500:
        raise BootstrapRefused(f"bootstrap refused ({status}): {doc.get('error', doc)}", None, status)
    if status != 200:
        raise BootstrapError(f"bootstrap failed ({status}): {doc.get('error', doc)}")
    chain, bundle, fleet_url = doc.get("chainPem"), doc.get("trustBundlePem"), doc.get("fleetUrl")
    if not (isinstance(chain, str) and isinstance(bundle, str) and isinstance(fleet_url, str)):
        raise BootstrapError("the bootstrap answer lacks chainPem, trustBundlePem or fleetUrl")
    if bundle_fingerprint(bundle) != bundle_fingerprint(bundle_pem):
        raise TrustError("the controller answered with another trust bundle than the pinned one")
    identity = state_dir.save_identity(key, chain, bundle)
    return Joined(identity, fleet_url)
