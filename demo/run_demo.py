"""`make demo`: meshcd on one machine, end to end.

    python demo/run_demo.py [--dir .meshcd-demo] [--smoke]

1. a bare Git repo seeded from repo_layout_example (one commit), with the post-receive hook
   from webhooks/contrib installed, so a `git push` tells meshcd at once (the poll, every
   5 s here, is the safety net); and a working clone for you to edit;
2. `meshcd serve` on SQLite in <dir>/data;
3. one tiny HTTP app per static endpoint of the example (on the port behind its proxy);
4. one managed proxy per app instance (`meshcd proxy join` with a token from the API);
5. waits until every proxy is SYNCED, prints what to edit and push, and waits for Ctrl-C,
   then stops everything it started.

`--smoke` edits a route, commits and pushes it itself, waits for every proxy to ACK the new
revision, prints the result and exits 0 (or 1 on failure).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXAMPLE = ROOT / "repo_layout_example"
HOOK = ROOT / "webhooks" / "contrib" / "post-receive"
MESHCD = str(Path(sys.executable).parent / "meshcd")


class DemoError(Exception):
    pass


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def run(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    if done.returncode != 0:
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

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     method="POST", headers={
                                         "Content-Type": "application/json",
                                         "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


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
        time.sleep(0.25)


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


def seed_repo(base: Path) -> tuple[Path, Path]:
    """The bare repo (one commit of repo_layout_example) and a working clone."""
    bare, seed, work = base / "mesh-config.git", base / "seed", base / "mesh-config"
    who = {"GIT_AUTHOR_NAME": "meshcd demo", "GIT_AUTHOR_EMAIL": "demo@meshcd.invalid",
           "GIT_COMMITTER_NAME": "meshcd demo", "GIT_COMMITTER_EMAIL": "demo@meshcd.invalid"}
    shutil.copytree(EXAMPLE, seed)
    run(["git", "init", "-q", "-b", "main", str(seed)])
    run(["git", "add", "-A"], cwd=seed)
    run(["git", "commit", "-q", "-m", "Seed from repo_layout_example"], cwd=seed, env=who)
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
    from reconciler.spec.sources import DirectorySource
    from reconciler.spec.validate import validate
    from renderers import default_fleet

    result = validate(DirectorySource(str(EXAMPLE)))
    if not result.ok:
        raise DemoError("repo_layout_example does not validate")
    return list(default_fleet(result.model))


def all_synced(api: Api, ids: set[str], revision: str | None = None) -> bool:
    ledger = {p["proxyId"]: p for p in api.get("/api/proxies")["proxies"]}
    return ids <= set(ledger) and all(
        ledger[i]["state"] == "SYNCED" and ledger[i]["ackedVersion"]
        and (revision is None or ledger[i]["desiredRevision"] == revision) for i in ids)


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


def smoke_edit(work: Path) -> str:
    """Change the catalog route's default timeout, commit and push; returns the commit."""
    path = work / "routes" / "catalog.yaml"
    text = path.read_text()
    if "timeout: 5s" not in text:
        raise DemoError("routes/catalog.yaml no longer has 'timeout: 5s' to edit")
    path.write_text(text.replace("timeout: 5s", "timeout: 6s", 1))
    run(["git", "commit", "-q", "-am", "catalog: default timeout 6s"], cwd=work)
    run(["git", "push", "-q", "origin", "main"], cwd=work)
    return run(["git", "rev-parse", "HEAD"], cwd=work).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="meshcd demo")
    parser.add_argument("--dir", type=Path, default=Path(".meshcd-demo"))
    parser.add_argument("--smoke", action="store_true",
                        help="push one change, wait for every proxy to ACK it, exit 0/1")
    parser.add_argument("--api-port", type=int, default=8080)
    args = parser.parse_args(argv)
    base: Path = args.dir.resolve()
    if base.exists():
        shutil.rmtree(base)  # the demo's state is its own; each run starts clean
    base.mkdir(parents=True)
    (base / "logs").mkdir()
    children = Children(base / "logs")
    interrupted = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started in the background (SIG_IGN)
    try:
        bare, work = seed_repo(base)
        secret_file = base / "generic.secret"
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
        }
        (base / "meshcd.yaml").write_text(json.dumps(settings, indent=2))
        api_url = f"http://127.0.0.1:{api_port}"
        install_hook(bare, secret_file, api_url)
        say(f"config repo {bare} (working clone: {work})")
        children.start("meshcd-serve", [MESHCD, "serve", "--config", str(base / "meshcd.yaml")])
        wait(lambda: (data / "admin.token").exists() and urllib.request.urlopen(
            api_url + "/healthz", timeout=2), 60, "meshcd serve", children)
        api = Api(api_url, (data / "admin.token").read_text().strip())
        wait(lambda: (api.get("/api/status")["deployed"] or {}).get("id"), 60,
             "the first revision", children)
        fleet = static_fleet()
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
                   "--drain-seconds", "1"]
            children.start(f"proxy-{proxy.id}", cmd + (["--labels", labels] if labels else []))
        ids = {p.id for p in fleet}
        wait(lambda: all_synced(api, ids), 90, f"all {len(ids)} proxies to be SYNCED", children)
        status = api.get("/api/status")
        say(f"{len(ids)} proxies SYNCED on revision #{status['deployed']['id']} "
            f"({status['deployed']['commit'][:12]})")
        web_tokens = {role: json.loads(run([MESHCD, "token", "create", "--role", role,
                                            "--name", f"demo-{role}", "--data-dir", str(data),
                                            "--json"]))["token"]
                      for role in ("viewer", "operator")}
        frontend = next(p for p in fleet if p.service.name == "frontend")
        env_hint = f"MESHCD_DATA_DIR={data}"
        outbound = frontend.ports.outbound if frontend.ports else 0
        if args.smoke:
            code, body = through_mesh(outbound)
            if code != 200:
                raise DemoError(f"frontend -> catalog through the mesh answered {code}: {body!r}")
            say(f"frontend -> catalog through the proxies: {code} {body.decode().strip()}")
            commit = smoke_edit(work)
            say(f"pushed {commit[:12]}; waiting for every proxy to ack it")
            wait(lambda: all_synced(api, ids, commit), 90, "every proxy to ack the push",
                 children)
            rev = next(r for r in api.get("/api/revisions")["revisions"]
                       if r["commit"] == commit)
            if rev["status"] != "deployed":
                raise DemoError(f"revision {rev['id']} is {rev['status']}: {rev['reason']}")
            plan = api.get(f"/api/revisions/{rev['id']}")["plan"]
            say(f"revision #{rev['id']} {rev['status']} (trigger: {rev['trigger']}); "
                f"{plan['proxies']['changed']} proxies changed, all {len(ids)} SYNCED")
            code, _ = through_mesh(outbound)
            if code != 200:
                raise DemoError(f"after the push, frontend -> catalog answered {code}")
            print(run([MESHCD, "status"], env={"MESHCD_DATA_DIR": str(data)}), flush=True)
            say("smoke test passed")
            return 0
        print(f"""
meshcd is running: {len(ids)} proxies, all SYNCED.

  Edit the config and push it (the post-receive hook tells meshcd at once):
      cd {work}
      $EDITOR routes/catalog.yaml          # e.g. change a timeout or a weight
      git commit -am "my change" && git push

  Watch it land:
      {env_hint} {MESHCD} status
      {env_hint} {MESHCD} proxies
      {env_hint} {MESHCD} history
      {env_hint} {MESHCD} audit list
      {env_hint} {MESHCD} audit verify

  Send traffic through the mesh (frontend's app -> its proxy's outbound port -> catalog):
      curl -H 'Host: catalog.shop' http://127.0.0.1:{outbound}/products/1

  Web page (sign in with a token): {api_url}/
      viewer token:   {web_tokens["viewer"]}
      operator token: {web_tokens["operator"]}
      admin token:    in {data / 'admin.token'}

  API: {api_url}/api/status    metrics: {api_url}/metrics    logs: {base / 'logs'}

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
        children.stop()
        if interrupted:
            say("stopped everything the demo started")


if __name__ == "__main__":
    sys.exit(main())
