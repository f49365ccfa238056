"""Benchmark: load + validate a big synthetic repo from a git tree, cold and after a one-file change.

    .venv/bin/python bench/validate.py [--json PATH] [--services N --routes N --policies N]

1. Generates the synthetic repo (bench/synth.py: 2,000 services, 10,000 route rules over
   2,000 Routes, 5,000 AuthorizationPolicies, 500 TrafficPolicies) and commits it to a real
   bare git repo with pygit2 (blobs and trees written directly, no checkout).
2. cold: `validate(GitTreeSource(repo, first_commit))` with an empty ValidationCache.
3. incremental: one route file changes in a new commit; `validate` of that commit with the
   cache of the previous run (only the changed blob is parsed). Repeated a few times with a
   different file each time; the median is reported.
4. Prints a table with the machine it ran on; `--json PATH` writes
   {"cold_s", "incremental_s", "peak_rss_mb"} (plus details under "extra").

Targets (issue #2, on the 2-core machine): cold < 10 s, incremental < 300 ms.
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
from reconciler.language.checks import run_checks
from reconciler.language.validate import ValidationCache, validate
from reconciler.source.tree import GitTreeSource

TARGET_COLD_S = 10.0
TARGET_INCREMENTAL_S = 0.300
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
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    oid = repo.create_commit("refs/heads/main", SIG, SIG, message, write_tree(repo, src), parents)
    return str(oid)


def change_one_route(src: Path, n: int) -> str:
    """Edit the n-th route file (a timeout: a real, valid change). Returns its path."""
    files = sorted((src / "routes").rglob("*.yaml"))
    path = files[(n * 7919) % len(files)]
    text = path.read_text()
    old = "      timeout: 5s\n"
    assert old in text, path
    path.write_text(text.replace(old, f"      timeout: {6 + n}s\n", 1))
    return str(path.relative_to(src))


def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="meshcd-bench-"))
    src = work / "src"
    t0 = time.perf_counter()
    counts = generate(src, args.services, args.routes, args.policies, args.seed)
    gen_s = time.perf_counter() - t0

    repo = pygit2.init_repository(str(work / "repo.git"), bare=True)
    repo.set_head("refs/heads/main")
    t0 = time.perf_counter()
    first = commit(repo, src, "synthetic repo")
    commit_s = time.perf_counter() - t0

    cache = ValidationCache()
    t0, c0 = time.perf_counter(), time.process_time()
    result = validate(GitTreeSource(repo, first), cache=cache)
    cold_s = time.perf_counter() - t0
    cold_cpu_s = time.process_time() - c0
    cold_findings = len(result.findings)
    cold_parsed = cache.parsed

    t0 = time.perf_counter()
    run_checks(result.model)
    checks_s = time.perf_counter() - t0

    incremental: list[float] = []
    incremental_cpu: list[float] = []
    parsed: list[int] = []
    changed: list[str] = []
    for n in range(args.repeat):
        changed.append(change_one_route(src, n))
        rev = commit(repo, src, f"change {n}")
        before = cache.parsed
        t0, c0 = time.perf_counter(), time.process_time()
        result = validate(GitTreeSource(repo, rev), cache=cache)
        incremental.append(time.perf_counter() - t0)
        incremental_cpu.append(time.process_time() - c0)
        parsed.append(cache.parsed - before)
    return {
        "cold_s": round(cold_s, 3),
        "incremental_s": round(statistics.median(incremental), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "extra": {
            **counts,
            "documents": result.documents,
            "findings_cold": cold_findings,
            "findings_last": len(result.findings),
            "files_parsed_cold": cold_parsed,
            "files_parsed_incremental": parsed,
            "incremental_runs_s": [round(x, 4) for x in incremental],
            "cold_cpu_s": round(cold_cpu_s, 3),
            "incremental_cpu_s": round(statistics.median(incremental_cpu), 4),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "checks_only_s": round(checks_s, 3),
            "generate_s": round(gen_s, 2),
            "commit_s": round(commit_s, 2),
            "changed_files": changed,
            "workdir": str(work),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="meshcd validate benchmark (issue #2)")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--routes", type=int, default=10000, help="route rules in total")
    ap.add_argument("--policies", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5, help="one-file changes to time (median)")
    ap.add_argument("--workdir", help="where to write the repo (default: a new temp dir)")
    args = ap.parse_args(argv)
    args.repeat = max(1, min(args.repeat, 50))

    out = run(args)
    x = out["extra"]
    assert isinstance(x, dict)
    rows = [
        ("machine", f"{x['cpu']}, {x['cores']} cores, Python {x['python']}"),
        ("repo", f"{x['services']} services, {x['routes']} Routes ({x['route_rules']} rules), "
                 f"{x['policies']} AuthorizationPolicies, {x['traffic_policies']} TrafficPolicies"),
        ("files / documents", f"{x['files']} / {x['documents']}"),
        ("findings", f"{x['findings_cold']} (cold), {x['findings_last']} (last)"),
        ("cold load+validate", f"{out['cold_s']:.3f} s  (target < {TARGET_COLD_S:g} s)"
                               f"  {'OK' if out['cold_s'] < TARGET_COLD_S else 'SLOW'}"),  # type: ignore[operator]
        ("  CPU time", f"{x['cold_cpu_s']:.3f} s"),
        ("  checks alone (warm)", f"{x['checks_only_s']:.3f} s"),
        ("one-file change", f"{out['incremental_s']:.4f} s median of {len(x['incremental_runs_s'])}"
                            f"  (target < {TARGET_INCREMENTAL_S * 1000:g} ms)"
                            f"  {'OK' if out['incremental_s'] < TARGET_INCREMENTAL_S else 'SLOW'}"),  # type: ignore[operator]
        ("  CPU time", f"{x['incremental_cpu_s']:.4f} s"),
        ("  files parsed", f"{x['files_parsed_cold']} cold, {x['files_parsed_incremental']} per change"),
        ("peak RSS", f"{out['peak_rss_mb']} MiB"),
        ("load average", f"{x['load_average']} (other work on the machine inflates wall times)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
