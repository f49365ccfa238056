"""`make demo` never deletes its directory: a second run reuses it, `--fresh` moves it aside,
a directory that is not a demo's is refused (demo/run_demo.py `prepare_dir`). The whole demo
reusing a directory, for real: tests/project/test_demo_smoke.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from demo.run_demo import DemoError, prepare_dir

NOW = datetime(2026, 12, 5, 3, 4, 5, tzinfo=UTC)


def _earlier_demo(base: Path) -> None:
    (base / "mesh-config.git" / "refs" / "heads").mkdir(parents=True)
    (base / "mesh-config.git" / "refs" / "heads" / "main").write_text("c0ffee\n")
    (base / "data").mkdir()
    (base / "data" / "meshcd.db").write_text("the audit trail")
    (base / "meshcd.yaml").write_text("{}")


def test_new_directory_is_seeded(tmp_path: Path) -> None:
    assert prepare_dir(tmp_path / "demo", fresh=False, smoke=False, now=NOW) == "seed"
    assert (tmp_path / "demo" / "logs").is_dir()


def test_an_earlier_demo_is_reused_as_it_is(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    _earlier_demo(base)
    assert prepare_dir(base, fresh=False, smoke=False, now=NOW) == "reuse"
    assert (base / "data" / "meshcd.db").read_text() == "the audit trail"
    assert (base / "mesh-config.git" / "refs" / "heads" / "main").read_text() == "c0ffee\n"


def test_fresh_moves_the_earlier_demo_aside(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    _earlier_demo(base)
    assert prepare_dir(base, fresh=True, smoke=False, now=NOW) == "seed"
    aside = tmp_path / "demo.old-20261205-030405"
    assert (aside / "data" / "meshcd.db").read_text() == "the audit trail"
    assert sorted(p.name for p in base.iterdir()) == ["logs"]


def test_smoke_refuses_an_existing_demo_and_touches_nothing(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    _earlier_demo(base)
    with pytest.raises(DemoError, match="--fresh"):
        prepare_dir(base, fresh=False, smoke=True, now=NOW)
    assert (base / "data" / "meshcd.db").read_text() == "the audit trail"


def test_a_directory_that_is_not_a_demo_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "mine"
    base.mkdir()
    (base / "notes.txt").write_text("keep me")
    for fresh in (False, True):
        with pytest.raises(DemoError, match="not a demo's directory"):
            prepare_dir(base, fresh=fresh, smoke=False, now=NOW)
    assert (base / "notes.txt").read_text() == "keep me"
