"""The pages of a real canary rollout under real traffic (tests/canary_e2e harness: real
`meshcd serve` with the fast preset, joined proxies, backend apps, open-loop load) in a real
headless Chromium: a 5xx change shows on the Overview with canary-vs-baseline numbers while it
rolls out, is judged failed and rolled back, and its revision page draws the canary's error
rate over the judge's threshold while the baseline stays under it. Screenshots go to
test-output/screenshots/canary-e2e-*.png."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

from canary_harness import CanaryMesh, Topology, bad_change, until
from chromium_driver import SCREENSHOTS, chromium_session, page_text, sign_in_browser

RATE = 40.0


def polyline_ys(svg: Any, css: str) -> list[float]:
    from selenium.webdriver.common.by import By

    points = svg.find_element(By.CSS_SELECTOR, css).get_attribute("points") or ""
    return [float(p.split(",")[1]) for p in points.split()]


def test_a_5xx_canary_on_the_pages() -> None:
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory(prefix="canary-pages-") as tmp, chromium_session() as driver:
        mesh = CanaryMesh(Path(tmp), Topology.pick(2, 2))
        try:
            mesh.start()
            with mesh.load(RATE) as load:
                until(lambda: len(load.since(time.time() - 3)) > 0, 30, "traffic")
                sign_in_browser(driver, mesh.api.base, mesh.api.token)
                commit = mesh.commit(bad_change("5xx", mesh.healthy), "bad change: 5xx")

                # While it rolls out the Overview shows the stage's canary vs baseline.
                until(lambda: commit[:12] in page_text(driver, "#rollout-state"), 60,
                      "the rollout on the overview", 0.1)
                driver.save_screenshot(str(SCREENSHOTS / "canary-e2e-overview.png"))
                rev = mesh.wait_status(commit, {"rejected", "deployed", "failed"}, 180)
                assert rev["status"] == "rejected" and rev["outcome"] == "rolled_back", rev

            driver.get(f"{mesh.api.base}/revisions/{rev['id']}")
            summary = page_text(driver, "#rollout-summary")
            assert "ROLLED BACK" in summary, summary
            stages = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "ol.timeline li")]
            assert "failed" in stages[0] and "error_rate" in stages[0], stages
            assert re.search(r"canary \d+ requests, [1-9]\d*\.\d\d% errors", stages[0]), stages
            charts = driver.find_elements(By.CSS_SELECTOR, "figure.chart svg")
            assert len(charts) == 3
            error_chart = charts[0]
            limit_y = float(error_chart.find_element(By.CSS_SELECTOR, "line.threshold")
                            .get_attribute("y1") or "nan")
            canary = polyline_ys(error_chart, "polyline.canary")
            baseline = polyline_ys(error_chart, "polyline.baseline")
            assert canary and baseline
            # SVG y grows downwards: the canary's worst second is over the 1% line, and higher
            # than the baseline's worst.
            assert min(canary) < limit_y, (canary, limit_y)
            assert min(canary) < min(baseline), (canary, baseline)
            driver.execute_script("document.getElementById('h-rollout').scrollIntoView()")
            driver.save_screenshot(str(SCREENSHOTS / "canary-e2e-revision.png"))
        finally:
            mesh.close()
