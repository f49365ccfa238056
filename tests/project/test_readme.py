"""README is the newcomer's entry point: keep what it promises in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.language.codes import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_finding_code_is_listed_with_its_summary() -> None:
    rows = dict(re.findall(r"^\| (MCD\d{3}) \| \w+ \| (.+) \|$", README, flags=re.MULTILINE))
    assert set(rows) == set(CATALOGUE), "README's code table differs from reconciler.language.codes"
    for code, entry in CATALOGUE.items():
        assert rows[code] == entry.summary, code


def test_every_command_readme_shows_exists() -> None:
    shown = set(re.findall(r"(?:`|bin/)meshcd ([a-z][a-z-]+)", README))
    known = set(cli.list_commands(None))  # type: ignore[arg-type]
    missing = {c for c in shown if c not in known}
    assert not missing, f"README mentions commands that do not exist: {sorted(missing)}"


def test_linked_docs_exist() -> None:
    for link in re.findall(r"\]\(((?:docs|repo_layout_example)/[^)#]*)\)", README):
        assert (ROOT / link).exists(), link


def test_help_runs_for_every_command() -> None:
    runner = CliRunner()
    for name in cli.list_commands(None):  # type: ignore[arg-type]
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
