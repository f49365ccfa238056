"""Time the evaluator and the route matcher (not a test; no timing assertions in tests).

    .venv/bin/python tests/proxy_config/time_hot_path.py

Prints ns per call (best of 7 runs) for the documented example snapshot.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy_runtime.config import (
    AuthzRequest,
    choose_cluster,
    evaluate,
    is_allowed,
    load_config,
    select_route,
)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    doc = json.loads((Path(__file__).resolve().parents[1] / "tests" / "proxy_config" / "data" / "example.json").read_text())
    cfg = load_config(doc)
    assert cfg.inbound is not None and cfg.outbound is not None
    authz, outbound = cfg.inbound.authz, cfg.outbound
    req = AuthzRequest(
        principal="shop.example/ns/shop/sa/frontend",
        source_ip="10.0.0.3",
        destination_port=8080,
        method="POST",
        path="/api/orders",
        headers={"x-env": "prod"},
    )
    hit = select_route(outbound, "cart", "POST", "/y", {})
    assert hit is not None
    route = hit[1]
    cases: list[tuple[str, Any]] = [
        ("noop (interpreter baseline)", lambda: None),
        (
            "AuthzRequest(...)",
            lambda: AuthzRequest(
                principal="shop.example/ns/shop/sa/frontend",
                source_ip="10.0.0.3",
                destination_port=8080,
                method="GET",
                path="/api/x",
            ),
        ),
        ("evaluate (ALLOW matches)", lambda: evaluate(authz, req)),
        ("is_allowed (ALLOW matches)", lambda: is_allowed(authz, req)),
        (
            "select_route (all match kinds)",
            lambda: select_route(
                outbound, "cart.shop:8080", "GET", "/api/x?debug=1", {"x-canary": "1"}
            ),
        ),
        ("select_route (second route)", lambda: select_route(outbound, "cart", "POST", "/y", {})),
        ("choose_cluster", lambda: choose_cluster(route, 0.5)),
    ]
    print(f"cpu: {_cpu()}, cores: {os.cpu_count()}, python {platform.python_version()}")
    n = 20_000
    for name, fn in cases:
        # CPU time of this process: the figures hold up on a busy machine better than wall time
        best = min(timeit.repeat(fn, number=n, repeat=7, timer=time.process_time)) / n
        print(f"  {name:34s} {best * 1e9:9.0f} ns/call")


if __name__ == "__main__":
    main()
