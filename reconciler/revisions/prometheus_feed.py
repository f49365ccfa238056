"""Prometheus as the canary judge's source (`analysis.source: prometheus`, docs/rollout.md):
a thin I/O shell that, while a canary rollout runs, reads the per-second windows of the
rollout's target proxies from Prometheus (`PrometheusProvider.windows_by_proxy`, in a thread:
httpx is sync) every `interval_s`, from where it last read up to `now - lag_s`, and puts each
window on the deployer's event queue as the fleet server does (`reconciler.fleet.events.Stats`
with `source="prometheus"`), so the engine and the SeriesRecorder charts get them. The deployer
is built with `stats_source="prometheus"` and ignores the fleet stream's stats (no mixing of
sources). A window of the wrong shape is dropped (and counted in `bad_windows`).

Prometheus unreachable or refusing: logged, audited (`analysis.source_error`) at most once
per rollout stage or per minute, and the feed keeps polling from where it last read; the
engine's own outcomes (Error without stats, Inconclusive with too few requests) decide what
happens to the stage. The last `lag_s` seconds of a bake are not seen by its final judgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from reconciler.analysis.sample import BadWindow
from reconciler.fleet import EventSink, Stats, StatsWindow

log = logging.getLogger("meshcd.prometheus_feed")

SOURCE: Literal["prometheus"] = "prometheus"
AUDIT_EVERY_S = 60.0  # an error is audited at most this often (and once per stage)
MAX_READ_S = 600  # never read further back than this (a long outage, a restored rollout)


class WindowsProvider(Protocol):
    display_url: str

    def windows_by_proxy(self, proxy_ids: Sequence[str], start: float, end: float,
                         step: float = 1.0) -> dict[str, list[dict[str, Any]]]: ...

    def close(self) -> None: ...


class StatsSink(Protocol):
    """What the feed needs of `CanaryDeployer`: the running rollout, and its event queue."""

    @property
    def active(self) -> Any: ...

    @property
    def stats_source(self) -> str: ...

    @property
    def events(self) -> EventSink: ...


AuditFn = Callable[[str, str, str, dict[str, Any]], None]  # actor, kind, subject, data


class PrometheusFeed:
    def __init__(self, deployer: StatsSink, provider: WindowsProvider, *, audit: AuditFn,
                 interval_s: float = 5.0, lag_s: float = 10.0, step: float = 1.0,
                 now: Callable[[], float] = time.time) -> None:
        self.deployer = deployer
        self.provider = provider
        self.audit = audit
        self.interval_s = interval_s
        self.lag_s = lag_s
        self.step = step
        self.now = now
        self._rollout: Any = None  # the rollout being read (identity)
        self._cursor: int | None = None  # read up to here (a step boundary)
        self._audited: tuple[Any, int] | None = None  # (rollout, stage) of the last audit
        self._audited_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        self.errors = 0
        self.bad_windows = 0
        if deployer.stats_source != SOURCE:
            raise ValueError("the canary deployer judges the fleet stream's stats; build it "
                             "with stats_source='prometheus' to feed it from Prometheus")

    # -- one poll (the logic; tests call this with an injected clock) ------------------------

    async def poll(self) -> int:
        """Read what is new for the running rollout and feed it; the number of windows fed."""
        r = self.deployer.active
        if r is None:
            self._rollout, self._cursor = None, None
            return 0
        now = self.now()
        if r is not self._rollout:
            self._rollout = r
            self._cursor = math.floor(r.started_at)
        assert self._cursor is not None
        end = math.floor(now - self.lag_s)
        start = max(self._cursor, end - MAX_READ_S)
        if end <= start:
            return 0
        ids = sorted(t.proxy_id for t in r.engine.state.spec.targets)
        try:
            got = await asyncio.to_thread(self.provider.windows_by_proxy, ids, float(start),
                                          float(end), self.step)
        except Exception as exc:  # PrometheusError, or an answer of an unexpected shape
            await self._error(r, exc, now)
            return 0  # the cursor stays: the next poll reads this range again
        if self.deployer.active is not r:
            return 0  # the rollout ended while we read
        self._cursor = end
        fed = 0
        for proxy_id in sorted(got):
            for doc in got[proxy_id]:
                try:
                    window = StatsWindow.from_wire(doc)
                except BadWindow as exc:
                    self.bad_windows += 1
                    if self.bad_windows == 1:  # said once; counted always
                        log.warning("analysis source prometheus: %s: window dropped (%s); "
                                    "further ones are dropped silently", proxy_id, exc)
                    continue
                if start <= window.second < end:
                    self.deployer.events.put_nowait(Stats(proxy_id, window, SOURCE, at=now))
                    fed += 1
        return fed

    async def _error(self, r: Any, exc: Exception, now: float) -> None:
        self.errors += 1
        text = str(exc)[:500]
        log.warning("analysis source prometheus: %s", text)
        stage = int(r.engine.state.stage) + 1
        if self._audited == (r, stage) and now - self._audited_at < AUDIT_EVERY_S:
            return
        self._audited, self._audited_at = (r, stage), now
        data = {"source": SOURCE, "url": self.provider.display_url, "error": text,
                "revision_id": r.revision_id, "stage": stage}
        with contextlib.suppress(Exception):  # the audit log being down must not stop us
            await asyncio.to_thread(self.audit, "controller", "analysis.source_error",
                                    r.commit, data)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the evidence for good
                log.exception("prometheus feed poll failed")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
