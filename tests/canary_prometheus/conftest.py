from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
# canary_harness and prometheus_process are imported, not copied
for _p in (HERE, HERE.parent / "canary_e2e", HERE.parent / "rollout"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
