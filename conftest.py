"""Fixtures shared by every test folder (tests/): a database URL per backend.

PostgreSQL tests skip (saying why) when no server is reachable, except under CI, where
they fail: see reconciler.store.testing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.store import sqlite_url
from reconciler.store.testing import (
    PostgresMissing,
    must_run_postgres_tests,
    postgres_database,
    postgres_schema,
)


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """A fresh PostgreSQL database for the session (each test takes a schema of it)."""
    try:
        with postgres_database() as url:
            yield url
    except PostgresMissing as exc:
        if must_run_postgres_tests():
            pytest.fail(f"CI is set, so PostgreSQL tests must run: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for an empty store, once per backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "data")
        return
    with postgres_schema(request.getfixturevalue("postgres_db")) as url:
        yield url


# --- which tests were skipped for a missing system package, and the command that installs it --
# (a skip reason containing the text on the left means the Debian packages on the right)
SYSTEM_PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chromium and chromedriver are not installed", ("chromium", "chromium-driver")),
    ("(Debian package prometheus)", ("prometheus",)),
    ("wrk is not installed", ("wrk",)),
    ("gpg is not installed", ("gnupg",)),
    ("needs git, curl and python3", ("git", "curl")),
)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """At the end of a run: the tests skipped because a system package is missing, and the one
    command that installs every such package (Debian/Ubuntu)."""
    missing: dict[str, list[str]] = {}
    packages: list[str] = []
    for report in terminalreporter.stats.get("skipped", []):
        reason = _skip_reason(report)
        for needle, pkgs in SYSTEM_PACKAGES:
            if needle in reason:
                missing.setdefault(" ".join(pkgs), []).append(report.nodeid)
                packages += [p for p in pkgs if p not in packages]
    if not missing:
        return
    total = sum(len(ids) for ids in missing.values())
    terminalreporter.section(f"{total} tests skipped: system packages missing", sep="=",
                             yellow=True, bold=True)
    for pkgs, ids in missing.items():
        terminalreporter.write_line(f"{pkgs}: {len(ids)} tests skipped")
        for nodeid in ids[:5]:
            terminalreporter.write_line(f"    {nodeid}")
        if len(ids) > 5:
            terminalreporter.write_line(f"    ... and {len(ids) - 5} more")
    terminalreporter.write_line("install them (Debian/Ubuntu), then run `make test` again:")
    terminalreporter.write_line(f"    sudo apt-get install -y {' '.join(packages)}", bold=True)


def pytest_configure(config: pytest.Config) -> None:
    """Tests run beside a `make demo` whose second terminal exports MESHCD_DATA_DIR (README):
    no test may read the user's meshcd settings, so every MESHCD_* variable goes (but the
    tests' own MESHCD_TEST_*, e.g. MESHCD_TEST_POSTGRES_URL)."""
    import os  # (here, not at the top: the import block is being reorganised elsewhere)

    for name in [n for n in os.environ
                 if n.startswith("MESHCD_") and not n.startswith("MESHCD_TEST_")]:
        del os.environ[name]
