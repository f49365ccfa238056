from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def example() -> dict[str, Any]:
    """The documented example snapshot (normal form, with identity), a fresh copy per test."""
    return copy.deepcopy(_EXAMPLE)


_EXAMPLE: dict[str, Any] = json.loads((DATA / "example.json").read_text("utf-8"))
