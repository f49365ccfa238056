"""`meshcd status`, `meshcd proxies`, `meshcd history`: read-only views of a running
controller through its API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from reconciler.cli.api_client import ApiClient, api_options


def _ago(text: str | None, now: datetime) -> str:
    if not text:
        return "-"
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    s = int((now - t).total_seconds())
    if s < 0:
        s = 0
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    return f"{s // 3600}h ago"


def _unix(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _rev_line(r: dict[str, Any] | None) -> str:
    if not r:
        return "none"
    return f"#{r['id']} {r['commit'][:12]} {r['status']} ({r['trigger']}) {r['message'][:60]}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


@click.command("status")
@api_options
@click.option("--json", "as_json", is_flag=True, help="The API's JSON as is.")
def status(data_dir: Path, api_url: str | None, token: str | None, as_json: bool) -> None:
    """The deployed revision, the deploy state, the last fetch, proxies by state."""
    doc = ApiClient.from_options(data_dir, api_url, token).get("/api/status")
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    now = datetime.now(UTC)
    fetch = doc["fetch"]
    p = doc["proxies"]
    click.echo(f"repo:        {doc['repo']} (branch {doc['branch']})")
    click.echo(f"deployed:    {_rev_line(doc['deployed'])}")
    click.echo(f"deploy:      {doc['deployState']}"
               + (f" - {_rev_line(doc['current'])}" if doc.get("current") else ""))
    latest = doc.get("latest")
    if latest and (not doc["deployed"] or latest["id"] != doc["deployed"]["id"]):
        reason = f" - {latest['reason']}" if latest.get("reason") else ""
        click.echo(f"latest:      {_rev_line(latest)}{reason}")
    last_ok = _ago(_unix(fetch.get("last_success")), now)
    line = f"last fetch:  {_ago(_unix(fetch.get('last_attempt')), now)}, last success {last_ok}"
    if fetch.get("consecutive_failures"):
        line += f"; {fetch['consecutive_failures']} failure(s) in a row: {fetch.get('last_error')}"
    click.echo(line)
    click.echo(f"proxies:     {p['SYNCED']} synced, {p['STALE']} stale, {p['NACKED']} nacked, "
               f"{p['DISCONNECTED']} disconnected")
    click.echo(f"epoch:       {doc['epoch']}   trust domain: {doc['trustDomain']}")
    for problem in doc.get("degraded") or []:
        click.echo(f"DEGRADED:    {problem}")


@click.command("proxies")
@api_options
@click.option("--json", "as_json", is_flag=True)
def proxies(data_dir: Path, api_url: str | None, token: str | None, as_json: bool) -> None:
    """A table of the fleet: id, service, version, state, last seen."""
    doc = ApiClient.from_options(data_dir, api_url, token).get("/api/proxies")
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    now = datetime.now(UTC)
    rows = [[p["proxyId"], f"{p['service']}.{p['namespace']}", (p["ackedVersion"] or "-")[:12],
             p["state"], _ago(p["lastSeen"], now)] for p in doc["proxies"]]
    if not rows:
        click.echo("no proxies have joined yet")
        return
    click.echo(_table(rows, ["ID", "SERVICE", "VERSION", "STATE", "LAST SEEN"]))


def _trigger(r: dict[str, Any]) -> str:
    """A rollback revision names its target: "rollback to #7"."""
    target = (r.get("rollback") or {}).get("target")
    if r["trigger"] == "rollback":
        return f"rollback to #{target}" if target is not None else "rollback"
    return str(r["trigger"])


@click.command("history")
@api_options
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def history(data_dir: Path, api_url: str | None, token: str | None, limit: int,
            as_json: bool) -> None:
    """Revisions, newest first: id, commit, status, rollout outcome, trigger, author, message.

    OUTCOME is how the revision's canary rollout ended (promoted, rolled_back, aborted,
    superseded; "-" without one). Revisions made by `meshcd rollback` show the trigger
    "rollback to #N" (N: the revision whose config they deploy).
    """
    doc = ApiClient.from_options(data_dir, api_url, token).get("/api/revisions", limit=limit)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    rows = [[str(r["id"]), r["commit"][:12], r["status"], r.get("outcome") or "-", _trigger(r),
             r["author"][:30], r["message"][:50]] for r in doc["revisions"]]
    if not rows:
        click.echo("no revisions yet")
        return
    click.echo(_table(rows, ["ID", "COMMIT", "STATUS", "OUTCOME", "TRIGGER", "AUTHOR",
                             "MESSAGE"]))
