"""RolloutPolicy checks: unknown services (MCD101), stage order (MCD120), and a service covered
by more than one RolloutPolicy (MCD123).

Stages: counts are compared with counts and percents with percents (a `count: 1` canary then
`percent: 10` is normal); each must be strictly greater than the previous one of its kind, and
the last stage must be `percent: 100` so that every proxy ends up on the new config.
"""

from __future__ import annotations

from functools import partial

from reconciler.language.checks.context import CheckContext, where
from reconciler.language.model import RolloutPolicy


def _check_stages(ctx: CheckContext, rp: RolloutPolicy) -> None:
    last_count: tuple[int, int] | None = None  # (value, index)
    last_percent: tuple[float, int] | None = None
    for i, st in enumerate(rp.stages):
        if st.count is not None:
            if last_count is not None and st.count <= last_count[0]:
                ctx.add(
                    "MCD120",
                    f"stages[{i}] count {st.count} does not increase over stages[{last_count[1]}]"
                    f" count {last_count[0]}",
                    ctx.at(rp, "stages", i, "count"),
                )
            last_count = (st.count, i)
        if st.percent is not None:
            if last_percent is not None and st.percent <= last_percent[0]:
                ctx.add(
                    "MCD120",
                    f"stages[{i}] percent {st.percent:g} does not increase over "
                    f"stages[{last_percent[1]}] percent {last_percent[0]:g}",
                    ctx.at(rp, "stages", i, "percent"),
                )
            last_percent = (st.percent, i)
    if rp.stages:
        i = len(rp.stages) - 1
        last = rp.stages[i]
        if last.percent != 100:
            shown = f"percent {last.percent:g}" if last.percent is not None else f"count {last.count}"
            ctx.add(
                "MCD120",
                f"the last stage is {shown}: a rollout must end at percent 100",
                ctx.at(rp, "stages", i),
            )
    else:
        ctx.add("MCD120", "no stages: a rollout must end at percent 100", ctx.at(rp, "stages"))


def check(ctx: CheckContext) -> None:
    covered: dict[tuple[str, str], RolloutPolicy] = {}
    for rp in ctx.model.rollout_policies:
        ctx.local(rp, partial(_check_stages, ctx, rp))
        for i, ref in enumerate(rp.services):
            if ctx.service(ref) is None:
                ctx.add("MCD101", f"unknown service {ref}", ctx.at(rp, "services", i))
                continue
            prev = covered.setdefault(ref.key, rp)
            if prev is not rp:
                ctx.add(
                    "MCD123",
                    f"service {ref} is also covered by RolloutPolicy {prev.name!r} "
                    f"({where(ctx.at(prev, 'services'))}); the first one wins",
                    ctx.at(rp, "services", i),
                )
