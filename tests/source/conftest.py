"""Fixtures for the source tests: real git repos in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from source_helpers import Upstream


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    home = tmp_path / "home"
    home.mkdir()
    return Upstream(tmp_path / "upstream", home)


@pytest.fixture
def make_upstream(tmp_path: Path) -> Callable[[str], Upstream]:
    home = tmp_path / "home2"
    home.mkdir(exist_ok=True)
    return lambda name: Upstream(tmp_path / name, home)
