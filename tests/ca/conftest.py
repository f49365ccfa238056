"""Fixtures for the CA tests: a fixed clock, a CA in tmp_path, and database backends.

PostgreSQL tests skip (saying why) when no server is reachable, except under CI, where
they fail: see tests/support/postgres.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.ca import CertificateAuthority

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
TRUST_DOMAIN = "mesh.example"


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "data", TRUST_DOMAIN, now=NOW)
