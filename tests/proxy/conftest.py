"""Shared fixtures of the proxy tests: certificates (made once per session)."""

from __future__ import annotations

import pytest
from proxy_pki import CA


class PKI:
    def __init__(self) -> None:
        self.ca = CA("meshcd test CA")
        self.other_ca = CA("some other CA")
        self.td = "td"
        self.server_id = "spiffe://td/ns/shop/sa/cart"
        self.client_id = "spiffe://td/ns/shop/sa/web"
        self.server = self.ca.svid(self.server_id)
        self.client = self.ca.svid(self.client_id)
        self.stranger = self.other_ca.svid(self.client_id)
        self.expired = self.ca.svid(self.client_id, expired=True)
        self.intruder_id = "spiffe://td/ns/evil/sa/mallory"
        self.intruder = self.ca.svid(self.intruder_id)


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI()


from dataplanes import dataplane, envoy_host  # noqa: E402,F401  (the fixtures of the suites)
