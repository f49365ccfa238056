"""Joining over real TLS: pinned first contact, single-use tokens, refusals audited, then
the bootstrapped identity holds a fleet stream and renews its certificate on it."""

from __future__ import annotations

import http.client
import json
import ssl
from datetime import timedelta
from pathlib import Path

import pytest
from fleet_helpers import Controller, desired, now, run, start_agent, until

from proxy_runtime.agent.bootstrap import fetch_pinned_bundle, join
from proxy_runtime.agent.errors import BootstrapRefused, TrustError
from proxy_runtime.agent.identity import StateDir, make_csr, new_key
from reconciler.fleet import ProxyState


async def _controller(tmp_path: Path) -> Controller:
    ctl = Controller(tmp_path / "ctl")
    await ctl.start()
    await ctl.start_bootstrap()
    return ctl


def _join(ctl: Controller, token: str, service: str, sd: StateDir, namespace: str = "shop"):  # type: ignore[no-untyped-def]
    assert ctl.boot is not None
    bundle = fetch_pinned_bundle(ctl.boot.url, "sha256:" + ctl.ca.bundle_fingerprint())
    return join(ctl.boot.url, token, service, namespace, bundle, sd)


def test_bootstrap_connect_push_ack(tmp_path: Path) -> None:
    async def main() -> None:
        import asyncio

        ctl = await _controller(tmp_path)
        try:
            issued = ctl.tokens.create("web", "shop", now=now())
            sd = StateDir(tmp_path / "p")
            joined = await asyncio.to_thread(_join, ctl, issued.token, "web", sd)
            assert joined.identity.spiffe_id == "spiffe://mesh.test/ns/shop/sa/web"
            assert joined.fleet_url == ctl.fleet.url  # type: ignore[union-attr]
            assert (sd.path / "svid.key").stat().st_mode & 0o777 == 0o600
            a = await start_agent(sd, joined.fleet_url, "web-1", "web", "shop")
            try:
                d = desired(7)
                ctl.fleet.set_desired({"web-1": d})  # type: ignore[union-attr]
                out = await ctl.fleet.wait_for_acks({"web-1": d.version}, 10)  # type: ignore[union-attr]
                assert out["web-1"].status == "acked"
            finally:
                await a.stop()
        finally:
            await ctl.stop()
        used = ctl.records("token.used")
        assert len(used) == 1 and used[0].subject == "spiffe://mesh.test/ns/shop/sa/web"
        assert used[0].data["token_id"] == issued.id
        # the secret never reaches the audit trail
        assert issued.token not in json.dumps([r.data for r in ctl.audit.list(limit=100)])

    run(main())


@pytest.mark.parametrize("case", ["reused", "expired", "wrong-service", "unknown"])
def test_refused_tokens_are_audited(tmp_path: Path, case: str) -> None:
    async def main() -> None:
        import asyncio

        ctl = await _controller(tmp_path)
        try:
            if case == "expired":
                token = ctl.tokens.create("web", "shop", now=now() - timedelta(hours=1),
                                          ttl=timedelta(minutes=1)).token
            elif case == "unknown":
                token = "mjt_not-a-token"
            else:
                token = ctl.tokens.create("web", "shop", now=now()).token
            if case == "reused":
                await asyncio.to_thread(_join, ctl, token, "web", StateDir(tmp_path / "first"))
            service = "payments" if case == "wrong-service" else "web"
            with pytest.raises(BootstrapRefused) as info:
                await asyncio.to_thread(_join, ctl, token, service, StateDir(tmp_path / "p"))
        finally:
            await ctl.stop()
        reason = {"reused": "used", "expired": "expired", "wrong-service": "wrong_service",
                  "unknown": "unknown"}[case]
        assert info.value.reason == reason and info.value.status == 403
        assert not (tmp_path / "p" / "svid.pem").exists()
        refused = ctl.records("token.refused")
        assert [r.data["reason"] for r in refused] == [reason]
        assert refused[0].data["service"] == service

    run(main())


def test_wrong_service_does_not_burn_the_token(tmp_path: Path) -> None:
    async def main() -> None:
        import asyncio

        ctl = await _controller(tmp_path)
        try:
            token = ctl.tokens.create("web", "shop", now=now()).token
            with pytest.raises(BootstrapRefused):
                await asyncio.to_thread(_join, ctl, token, "db", StateDir(tmp_path / "a"))
            joined = await asyncio.to_thread(_join, ctl, token, "web", StateDir(tmp_path / "b"))
            assert joined.identity.spiffe_id.endswith("/ns/shop/sa/web")
        finally:
            await ctl.stop()

    run(main())


def test_fingerprint_pin_mismatch_sends_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        import asyncio

        ctl = await _controller(tmp_path)
        try:
            assert ctl.boot is not None
            with pytest.raises(TrustError, match="fingerprint mismatch"):
                await asyncio.to_thread(fetch_pinned_bundle, ctl.boot.url, "sha256:" + "ab" * 32)
            with pytest.raises(TrustError, match="not a CA fingerprint"):
                await asyncio.to_thread(fetch_pinned_bundle, ctl.boot.url, "md5:1234")
            # a bundle of another CA: the POST's TLS verification fails before the token is sent
            from reconciler.ca import CertificateAuthority

            other = CertificateAuthority.load_or_create(tmp_path / "other", "mesh.test", now=now())
            token = ctl.tokens.create("web", "shop", now=now()).token
            with pytest.raises(TrustError, match="does not verify"):
                await asyncio.to_thread(join, ctl.boot.url, token, "web", "shop",
                                        other.trust_bundle_pem().decode(), StateDir(tmp_path / "p"))
        finally:
            await ctl.stop()
        assert ctl.records("token.refused") == [] and ctl.records("token.used") == []
        # the token is still usable
        assert ctl.tokens.list()[0].used_at is None

    run(main())


def _post(url_port: int, ctx: ssl.SSLContext, body: bytes, path: str = "/bootstrap",
          method: str = "POST") -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPSConnection("127.0.0.1", url_port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def test_bad_bootstrap_requests(tmp_path: Path) -> None:
    async def main() -> None:
        import asyncio

        ctl = await _controller(tmp_path)
        try:
            assert ctl.boot is not None
            ctx = ssl.create_default_context(cadata=ctl.ca.trust_bundle_pem().decode())
            port = ctl.boot.bound_port
            token = ctl.tokens.create("web", "shop", now=now()).token
            csr = make_csr(new_key(), "x")

            async def post(doc: object, **kw: object) -> tuple[int, dict[str, object]]:
                body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                return await asyncio.to_thread(_post, port, ctx, body, **kw)  # type: ignore[arg-type]

            assert (await post(b"{nope"))[0] == 400
            assert (await post({"token": token}))[0] == 400
            good = {"token": token, "service": "web", "namespace": "shop", "csrPem": csr}
            assert (await post({**good, "extra": 1}))[0] == 400
            assert (await post({**good, "service": "Web!"}))[0] == 400
            status, doc = await post({**good, "csrPem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"})
            assert status == 400 and "signing request" in str(doc["error"])
            assert (await post(b"x" * 70_000))[0] == 413
            assert (await post(b"", method="GET", path="/nope"))[0] == 404
            assert (await post(b"", method="GET", path="/bootstrap"))[0] == 405
            # none of that used the token
            status, doc = await post(good)
            assert status == 200 and "BEGIN CERTIFICATE" in str(doc["chainPem"])
        finally:
            await ctl.stop()

    run(main())


def test_certificate_renewal_over_the_live_stream(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        sd = ctl.enroll(tmp_path / "p", "web", ttl=timedelta(hours=24))
        first = sd.load_identity()
        # the agent's clock says the certificate is 14 h old: past half-life and its jitter
        # (±1.2 h); once renewed, the clock is right again (else it would renew on and on)
        shift = [timedelta(hours=14)]
        a = await start_agent(sd, fleet.url, "web-1", "web", clock=lambda: now() + shift[0])
        try:
            d = desired(1)
            fleet.set_desired({"web-1": d})
            assert (await fleet.wait_for_acks({"web-1": d.version}, 10))["web-1"].status == "acked"
            await until(lambda: a.agent.renewals >= 1, what="renewal")
            shift[0] = timedelta(0)
            renewed = sd.load_identity()
            assert renewed.chain_pem != first.chain_pem
            assert renewed.key_pem != first.key_pem  # a fresh key, made on the proxy
            assert renewed.spiffe_id == first.spiffe_id
            # the running config carries the new certificate; same config version, one stream
            await until(lambda: a.runtime.config_dump()["snapshot"]["identity"]["certificatePem"]
                        == renewed.chain_pem, what="re-apply")
            assert a.agent.config_version == d.version
            assert a.agent.connects == 1
            assert a.agent.renewals == 1
            assert fleet.entry("web-1").state is ProxyState.SYNCED  # type: ignore[union-attr]
        finally:
            await a.stop()
            await ctl.stop()
        renewals = ctl.records("certificate.renewed")
        assert renewals and renewals[0].subject == "spiffe://mesh.test/ns/default/sa/web"

    run(main())
