"""Benchmark: render 20,000 proxies from the synthetic repo, re-render after a one-file change,
and plan a commit with its access-matrix diff.

    .venv/bin/python bench/render.py [--json PATH] [--proxies N] [--services N ...] [--verify]

1. Generates bench/synth.py's repo (2,000 services, 10,000 route rules, 5,000 policies),
   commits it to a bare git repo and validates it (not timed here: bench/validate.py does).
2. Fleet: --proxies managed proxies (default 20,000), spread evenly over the services, labels
   version=v1 for 80% and v2 for 20% (so labels vary but, without subset mTLS overrides,
   identical proxies still share one snapshot).
3. full: `render(model, fleet)` with nothing cached.
4. incremental: one route file changes in a new commit (a timeout); `render(new, fleet,
   previous=state)`. Repeated --repeat times with another file each time; median reported.
   --verify also renders the last revision in full and checks both are byte-identical.
5. plan: a further commit also edits one policy file (an ALLOW gains a path);
   `plan(old, new, old_render=...)`: resource diff, incremental render of the new revision,
   proxy diff (with unified diffs) and the access-matrix diff.
6. full matrix (extra): the access matrix of the whole first revision against nothing.
7. Prints a table with the machine; `--json PATH` writes
   {"full_s", "incremental_s", "plan_s", "peak_rss_mb"} (details under "extra").

Targets (issue #4): full < 10 s, incremental < 300 ms, plan < 2 s. Times are wall clock; CPU
times are under "extra" (other processes share the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synth import generate
from reconciler.language import model as sm
from reconciler.language.validate import ValidationCache, validate
from reconciler.plan import access_diff, plan
from reconciler.source.tree import GitTreeSource
from renderers import Fleet, Proxy, render

TARGETS = {"full_s": 10.0, "incremental_s": 0.300, "plan_s": 2.0}
SIG = pygit2.Signature("bench", "bench@example.invalid", 1_700_000_000, 0)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_tree(repo: pygit2.Repository, d: Path) -> pygit2.Oid:
    tb = repo.TreeBuilder()
    for p in sorted(d.iterdir()):
        if p.is_dir():
            tb.insert(p.name, write_tree(repo, p), pygit2.GIT_FILEMODE_TREE)
        else:
            tb.insert(p.name, repo.create_blob(p.read_bytes()), pygit2.GIT_FILEMODE_BLOB)
    return tb.write()


def commit(repo: pygit2.Repository, src: Path, message: str) -> str:
    parents = [] if repo.head_is_unborn else [repo.head.target]
    return str(repo.create_commit("refs/heads/main", SIG, SIG, message, write_tree(repo, src), parents))


def edit(src: Path, folder: str, n: int, old: str, new: str) -> str:
    files = sorted((src / folder).rglob("*.yaml"))
    path = files[(n * 7919) % len(files)]
    text = path.read_text()
    assert old in text, path
    path.write_text(text.replace(old, new, 1))
    return str(path.relative_to(src))


def make_fleet(model: sm.ConfigModel, proxies: int) -> Fleet:
    services = sorted(model.services_by_key.values(), key=lambda s: s.ref.key)
    v1, v2 = sm.FrozenDict({"version": "v1"}), sm.FrozenDict({"version": "v2"})
    return Fleet.of(
        Proxy(f"{s.name}.{s.namespace}-{i // len(services)}", s.ref, v2 if (i // len(services)) % 5 == 4 else v1)
        for i in range(proxies)
        for s in (services[i % len(services)],)
    )


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="meshcd-render-"))
    src = work / "src"
    counts = generate(src, args.services, args.routes, args.policies, args.seed)
    repo = pygit2.init_repository(str(work / "repo.git"), bare=True)
    repo.set_head("refs/heads/main")
    cache = ValidationCache()
    first = commit(repo, src, "synthetic repo")
    model = validate(GitTreeSource(repo, first), cache).model
    fleet = make_fleet(model, args.proxies)

    full, full_s, full_cpu = timed(render, model, fleet)

    inc_s: list[float] = []
    inc_cpu: list[float] = []
    rerendered: list[int] = []
    state, current = full.state, model
    last = full
    for n in range(args.repeat):
        edit(src, "routes", n, "      timeout: 5s\n", f"      timeout: {6 + n}s\n")
        current = validate(GitTreeSource(repo, commit(repo, src, f"route {n}")), cache).model
        last, s, c = timed(render, current, fleet, previous=state)
        inc_s.append(s)
        inc_cpu.append(c)
        rerendered.append(last.rendered)
        state = last.state
    verified = None
    if args.verify:
        again = render(current, fleet)
        verified = all(again.snapshots[p].canonical() == last.snapshots[p].canonical() for p in again.snapshots)

    # The plan's commit: one more route edit and an ALLOW policy that gains a path.
    edit(src, "routes", args.repeat, "      timeout: 5s\n", "      timeout: 9s\n")
    edit(src, "policies", 1, 'paths: ["/api/*", ', 'paths: ["/api/*", "/beta/*", ')
    target = validate(GitTreeSource(repo, commit(repo, src, "plan")), cache).model
    p, plan_s, plan_cpu = timed(plan, current, target, old_fleet=fleet, new_fleet=fleet, old_render=last)

    matrix_s = matrix_cpu = None
    matrix_flips = None
    if not args.skip_full_matrix:
        m, matrix_s, matrix_cpu = timed(access_diff, None, model)
        matrix_flips = len(m.flips)

    return {
        "full_s": round(full_s, 3),
        "incremental_s": round(statistics.median(inc_s), 4),
        "plan_s": round(plan_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "extra": {
            **counts,
            "proxies": len(fleet),
            "distinct_snapshots": len(full.distinct()),
            "full_cpu_s": round(full_cpu, 3),
            "incremental_runs_s": [round(x, 4) for x in inc_s],
            "incremental_cpu_s": round(statistics.median(inc_cpu), 4),
            "incremental_rerendered": rerendered,
            "incremental_verified_equal_to_full": verified,
            "plan_cpu_s": round(plan_cpu, 3),
            "plan_resources_changed": len(p.resources),
            "plan_proxies_changed": len(p.proxies.changes),
            "plan_distinct_changes": p.proxies.distinct_changes,
            "plan_access_granted": len(p.access.granted),
            "plan_access_revoked": len(p.access.revoked),
            "plan_access_evaluations": p.access.evaluations,
            "full_matrix_s": round(matrix_s, 3) if matrix_s is not None else None,
            "full_matrix_cpu_s": round(matrix_cpu, 3) if matrix_cpu is not None else None,
            "full_matrix_flips": matrix_flips,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "workdir": str(work),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    ap.add_argument("--proxies", type=int, default=20000)
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--policies", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="incremental runs (median reported)")
    ap.add_argument("--verify", action="store_true", help="check incremental == full (one more full render)")
    ap.add_argument("--skip-full-matrix", action="store_true", help="skip the whole-repo access matrix")
    ap.add_argument("--workdir", help="where to write the repo (default: a new temp dir)")
    args = ap.parse_args(argv)
    res = run(args)
    extra = res["extra"]
    assert isinstance(extra, dict)
    print(f"machine: {extra['cpu']}, {extra['cores']} cores, Python {extra['python']}, "
          f"load average {extra['load_average']}")
    print(f"repo: {extra['services']} services, {extra['route_rules']} route rules, "
          f"{extra['policies']} policies; {extra['proxies']} proxies, "
          f"{extra['distinct_snapshots']} distinct snapshots")
    print(f"{'measure':<16}{'wall':>10}{'cpu':>10}{'target':>10}")
    rows = (("full_s", "full_cpu_s"), ("incremental_s", "incremental_cpu_s"), ("plan_s", "plan_cpu_s"))
    for key, cpu in rows:
        print(f"{key:<16}{res[key]:>10}{extra[cpu]:>10}{'< ' + str(TARGETS[key]):>10}")
    print(f"{'peak_rss_mb':<16}{res['peak_rss_mb']:>10}")
    print(f"incremental re-rendered {extra['incremental_rerendered']} distinct snapshots"
          + (f"; equal to full: {extra['incremental_verified_equal_to_full']}" if args.verify else ""))
    print(f"plan: {extra['plan_resources_changed']} resources, {extra['plan_proxies_changed']} proxies "
          f"({extra['plan_distinct_changes']} distinct changes), access +{extra['plan_access_granted']}"
          f"/-{extra['plan_access_revoked']} ({extra['plan_access_evaluations']} evaluations)")
    if extra["full_matrix_s"] is not None:
        print(f"whole access matrix vs nothing: {extra['full_matrix_s']} s wall, "
              f"{extra['full_matrix_cpu_s']} s cpu, {extra['full_matrix_flips']} grants")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
