from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
for _p in (HERE, HERE.parent / "canary_e2e"):  # canary_harness is imported, not copied
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
