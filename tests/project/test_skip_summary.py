"""`make test` on a machine without chromium, prometheus or wrk does not pass silently: the root
conftest.py's terminal summary lists the tests skipped for a missing system package and the one
command that installs them (issue 17, finding 17)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SKIPPING = '''
import pytest

def test_browser():
    pytest.skip("chromium and chromedriver are not installed")

def test_prometheus():
    pytest.skip("/usr/bin/prometheus is not installed (Debian package prometheus)")

@pytest.mark.skipif(True, reason="wrk is not installed")
def test_wrk():
    pass

def test_unrelated_skip():
    pytest.skip("needs the semantic checks to report a warning")

def test_passes():
    pass
'''


def _run(tmp_path: Path, test_text: str, env: dict[str, str] | None = None) -> str:
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(test_text)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), "-c", "/dev/null", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'support'}",
             **(env or {})},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_summary_names_skipped_tests_and_the_install_command(tmp_path: Path) -> None:
    out = _run(tmp_path, SKIPPING)
    assert "3 tests skipped: system packages missing" in out, out
    assert "chromium chromium-driver: 1 tests skipped" in out, out
    assert "test_x.py::test_browser" in out and "test_x.py::test_wrk" in out, out
    assert "sudo apt-get install -y chromium chromium-driver prometheus wrk" in out, out
    assert "test_x.py::test_unrelated_skip" not in out.split("system packages missing")[1]


def test_no_summary_when_nothing_is_missing(tmp_path: Path) -> None:
    out = _run(tmp_path, "def test_passes():\n    pass\n")
    assert "system packages missing" not in out and "apt-get" not in out, out


def test_the_users_meshcd_environment_does_not_reach_tests(tmp_path: Path) -> None:
    """README has the demo's users export MESHCD_DATA_DIR; a test run in that shell must not
    talk to their demo."""
    out = _run(tmp_path, "import os\n\ndef test_env():\n"
               "    assert [n for n in os.environ if n.startswith('MESHCD_')] == "
               "['MESHCD_TEST_POSTGRES_URL']\n",
               env={"MESHCD_DATA_DIR": str(tmp_path / "demo"), "MESHCD_TOKEN": "mat_x",
                    "MESHCD_TEST_POSTGRES_URL": "postgresql+psycopg://postgres@127.0.0.1/x"})
    assert "1 passed" in out, out
