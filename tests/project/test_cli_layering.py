"""A proxy host runs `meshcd proxy ...` without controller code: no git, web framework or
database library may be imported on that path."""

from __future__ import annotations

import subprocess
import sys

CONTROLLER_ONLY = ("pygit2", "fastapi", "starlette", "sqlalchemy", "jinja2", "reconciler.language")

PROBE = """
import sys
from reconciler.cli.main import cli
try:
    cli.main(args=sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print("LOADED", " ".join(sorted(m for m in sys.modules)))
"""


def loaded_modules(*args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("LOADED "))
    return set(line.split()[1:])


def test_proxy_commands_import_no_controller_code() -> None:
    for args in (["proxy", "run", "--help"], ["proxy", "join", "--help"]):
        loaded = loaded_modules(*args)
        leaked = sorted(m for m in loaded if m.split(".")[0] in CONTROLLER_ONLY or m in CONTROLLER_ONLY)
        assert not leaked, (args, leaked)


def test_the_probe_sees_controller_imports_when_they_happen() -> None:
    # The same probe on a controller command must see them, or the test above proves nothing.
    loaded = loaded_modules("validate", "--list-codes")
    assert "reconciler.language" in loaded
