from __future__ import annotations

import sys
from pathlib import Path

# The fault tests reuse the controller helpers and the canary e2e harness (read-only).
_HERE = Path(__file__).resolve().parent
for _p in (_HERE, _HERE.parent / "controller", _HERE.parent / "canary_e2e"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
