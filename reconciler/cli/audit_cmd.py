"""`meshcd audit list|show|verify|export`: the audit trail through the API, or (verify,
export) straight from the store with --store URL."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

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
@click.option("--checkpoints", "checkpoint_files", multiple=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="With --store: also check against this checkpoint file (a proxy's "
                   "audit-checkpoints.json, or another audit-anchors.json). Repeatable.")
def verify(data_dir: Path, api_url: str | None, token: str | None,
           store_url: str | None, checkpoint_files: tuple[Path, ...]) -> None:
    """Recompute the hash chain, check the database file (SQLite's integrity check), and
    check the chain against the signed checkpoints kept outside the database (the data dir's
    audit-anchors.json, proxies' reports): a chain whose newest records were removed is
    reported with the missing seqs. Exit 0 intact, 1 broken, damaged or truncated, 2 cannot
    check."""
    anchor: dict[str, Any] | None = None
    if checkpoint_files and store_url is None:
        fail("--checkpoints needs --store (the API checks the controller's own checkpoints)")
    if store_url is not None:
        from reconciler.audit import AuditLog
        from reconciler.store.integrity import check_integrity

        try:
            log = AuditLog.open(store_url)
        except Exception as exc:  # any store failure: exit 2, or 1 for a damaged file
            _unreadable(store_url, exc)
        try:
            integrity: dict[str, Any] = check_integrity(log.engine).to_dict()
            try:
                result = log.verify()
                anchor = _anchor_report(log, result, data_dir, checkpoint_files)
            except Exception as exc:
                if integrity["ok"]:
                    fail(f"cannot read the audit trail at the store: {exc}")
                result = None
        finally:
            log.close()
        reason: str | None
        if result is None:
            ok, upto, broken, reason = False, 0, None, "the audit table cannot be read"
        else:
            ok, upto = result.ok, result.verified_up_to
            broken, reason = result.broken_at, result.reason
    else:
        doc = ApiClient.from_options(data_dir, api_url, token).get("/api/audit/verify")
        ok, upto, broken, reason = (doc.get("chainOk", doc["ok"]), doc["verifiedUpTo"],
                                    doc["brokenAt"], doc["reason"])
        integrity = doc.get("integrity") or {"checked": False, "ok": True, "problems": []}
        anchor = doc.get("anchor")
    if not integrity["ok"]:
        problems = "; ".join(integrity["problems"][:3])
        click.echo(f"database DAMAGED: the integrity check failed: {problems}", err=True)
    if ok and integrity["ok"]:
        pages = ("database integrity ok" if integrity["checked"]
                 else "no page check on this database")
        click.echo(f"audit chain intact: {upto} records verified; {pages}")
        if _show_anchor(anchor):
            return
        sys.exit(1)
    if not ok:
        click.echo(f"audit chain BROKEN at seq {broken}: {reason} (verified up to {upto})",
                   err=True)
        _show_anchor(anchor)
    sys.exit(1)


def _unreadable(store_url: str, exc: Exception) -> NoReturn:
    from reconciler.store.errors import StoreCorrupt

    if isinstance(exc, StoreCorrupt) or isinstance(exc.__cause__, StoreCorrupt):
        click.echo(f"database DAMAGED: {exc}", err=True)
        sys.exit(1)
    fail(f"cannot read the audit trail at the store: {exc}")


def _anchor_report(log: Any, result: Any, data_dir: Path,
                   files: tuple[Path, ...]) -> dict[str, Any]:
    """The chain against the signed checkpoints (docs/audit.md, "Anchors")."""
    from reconciler.audit.anchor_files import anchor_report

    doc: dict[str, Any] = anchor_report(log, result, data_dir, files).to_dict()
    return doc


def _show_anchor(anchor: dict[str, Any] | None) -> bool:
    """Print what the checkpoints prove; False if they show records removed or changed."""
    if anchor is None:
        return True
    if anchor["status"] in ("truncated", "rewritten"):
        click.echo(f"audit chain {anchor['status'].upper()}: {anchor['message']}", err=True)
        return False
    click.echo(anchor["message"])
    return True


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
