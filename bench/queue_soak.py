"""A long run of the stateful test of the revision queue and the rollout engine
(tests/revisions/test_revision_queue_stateful.py): N times the examples of the normal run.

    .venv/bin/python bench/queue_soak.py [N]      # default 20 (about 200,000 steps)

Prints the wall time; exits non-zero with hypothesis's shortest failing story if an
invariant breaks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    env = {**os.environ, "MESHCD_QUEUE_SOAK": str(n)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/revisions/test_revision_queue_stateful.py"], cwd=ROOT, env=env, check=False)
    print(f"queue soak x{n}: exit {done.returncode}, {time.monotonic() - started:.1f} s")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
