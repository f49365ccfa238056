"""`meshcd audit list|show|verify|export`: the audit trail through the API, or (verify,
export) straight from the store with --store URL."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from reconciler.cli.api_client import ApiClient, api_options, fail


@click.group("audit")
def audit() -> None:
    """Read and verify the tamper-evident audit trail."""


@audit.command("list")
@api_options
@click.option("--kind", help="e.g. revision.detected")
@click.option("--actor")
@click.option("--subject")
@click.option("--since", help="ISO-8601 time (inclusive)")
@click.option("--until", help="ISO-8601 time (exclusive)")
@click.option("--before", type=int, help="Records older than this seq (paging).")
@click.option("--limit", type=click.IntRange(1, 1000), default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_cmd(data_dir: Path, api_url: str | None, token: str | None, kind: str | None,
             actor: str | None, subject: str | None, since: str | None, until: str | None,
             before: int | None, limit: int, as_json: bool) -> None:
    """Newest first."""
    doc = ApiClient.from_options(data_dir, api_url, token).get(
        "/api/audit", kind=kind, actor=actor, subject=subject, since=since, until=until,
        before=before, limit=limit)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for r in doc["records"]:
        summary = json.dumps(r["data"], sort_keys=True, ensure_ascii=False)
        if len(summary) > 100:
            summary = summary[:97] + "..."
        click.echo(f"{r['seq']:>6}  {r['time'][:19]}Z  {r['actor'][:24]:<24}  {r['kind']:<22}  "
                   f"{r['subject'][:40]}  {summary}")
    if doc.get("next"):
        click.echo(f"(more: --before {doc['next']})")


@audit.command("show")
@api_options
@click.argument("seq", type=int)
def show(data_dir: Path, api_url: str | None, token: str | None, seq: int) -> None:
    """One record, as JSON."""
    doc = ApiClient.from_options(data_dir, api_url, token).get(f"/api/audit/{seq}")
    click.echo(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))


@audit.command("verify")
@api_options
@click.option("--store", "store_url", help="Verify straight from the database (sqlite:///... "
              "or postgresql+psycopg://...), without a running controller.")
def verify(data_dir: Path, api_url: str | None, token: str | None,
           store_url: str | None) -> None:
    """Recompute the hash chain. Exit 0 intact, 1 broken, 2 cannot check."""
    if store_url is not None:
        from reconciler.audit import AuditLog

        try:
            log = AuditLog.open(store_url)
            try:
                result = log.verify()
            finally:
                log.close()
        except Exception as exc:  # any store failure: exit 2
            fail(f"cannot read the audit trail at the store: {exc}")
        ok, upto, broken, reason = result.ok, result.verified_up_to, result.broken_at, result.reason
    else:
        doc = ApiClient.from_options(data_dir, api_url, token).get("/api/audit/verify")
        ok, upto, broken, reason = doc["ok"], doc["verifiedUpTo"], doc["brokenAt"], doc["reason"]
    if ok:
        click.echo(f"audit chain intact: {upto} records verified")
        return
    click.echo(f"audit chain BROKEN at seq {broken}: {reason} (verified up to {upto})", err=True)
    sys.exit(1)


@audit.command("export")
@api_options
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--store", "store_url", help="Export straight from the database.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Default: stdout.")
def export(data_dir: Path, api_url: str | None, token: str | None, fmt: str,
           store_url: str | None, out: Path | None) -> None:
    """Every record, oldest first, one canonical JSON object per line (docs/audit.md says
    how to verify it with nothing but the standard library)."""
    if store_url is not None:
        import io

        from reconciler.audit import AuditLog

        try:
            log = AuditLog.open(store_url)
            buf = io.StringIO()
            log.export_jsonl(buf)
            log.close()
        except Exception as exc:
            fail(f"cannot read the audit trail at the store: {exc}")
        payload = buf.getvalue().encode("utf-8")
    else:
        payload = ApiClient.from_options(data_dir, api_url, token).get_raw("/api/audit/export")
    if out is None:
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
    else:
        out.write_bytes(payload)
