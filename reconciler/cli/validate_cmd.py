"""`meshcd validate` and `meshcd show`: check a config repo like a compiler, print its model."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import click

from reconciler.language.codes import CATALOGUE, DETAILS
from reconciler.language.findings import Finding, Severity
from reconciler.language.loader import LoadLimits
from reconciler.language.model import (
    AuthorizationPolicy,
    ConfigModel,
    Match,
    RolloutPolicy,
    Route,
    RouteRule,
    Service,
    TrafficPolicy,
)
from reconciler.language.sources import ConfigReadError, DirectorySource, Source
from reconciler.language.validate import ValidationResult, validate

_STAGE = {"0": "loader and schema", "1": "semantic check"}

_VALIDATE_HELP = """Validate a config repo: YAML, schema, and semantic checks.

PATH is a directory (default: the current one). With --repo, files are read from a Git
revision instead (a commit, branch, tag, or tree id), without a checkout; PATH is then
the config folder inside that tree (default: its top).

Findings print like a compiler's, `file:line:col: severity CODE: message`, then a summary.
Exit status: 0 clean, 1 errors (or warnings with --strict), 2 usage or I/O error.

\b
As a pre-commit hook (https://pre-commit.com), in .pre-commit-config.yaml:
    repos:
      - repo: local
        hooks:
          - id: meshcd-validate
            name: meshcd validate
            entry: meshcd validate
            language: system
            pass_filenames: false
            files: '\\.ya?ml$'
(add the config folder to `entry` when the config is not at the top of the repo).
Or as a plain Git hook that checks exactly what is staged, .git/hooks/pre-commit:
    #!/bin/sh
    exec meshcd validate --repo . --rev "$(git write-tree)"
(append the config folder, e.g. `config`, when it is not the top of the repo).
"""


def _fail(message: str) -> NoReturn:
    click.echo(f"meshcd: {message}", err=True)
    sys.exit(2)


def _source(path: str | None, repo: str | None, rev: str | None) -> Source:
    if rev is not None and repo is None:
        raise click.UsageError("--rev needs --repo")
    try:
        if repo is not None:
            from reconciler.source.tree import GitTreeSource  # git only when a repo is read

            return GitTreeSource(repo, rev or "HEAD", subdir=path or "")
        return DirectorySource(path or ".")
    except ConfigReadError as e:
        _fail(str(e))


def _run(source: Source, limits: LoadLimits) -> ValidationResult:
    try:
        return validate(source, options=limits)
    except ConfigReadError as e:
        _fail(str(e))


def _limits(max_file_size: int | None, max_documents: int | None) -> LoadLimits:
    d = LoadLimits()
    return LoadLimits(
        max_file_size=max_file_size if max_file_size is not None else d.max_file_size,
        max_documents_per_repo=max_documents if max_documents is not None else d.max_documents_per_repo,
    )


def _source_options(f: Any) -> Any:
    f = click.option("--rev", metavar="REV", help="Revision to read with --repo (default HEAD).")(f)
    f = click.option("--repo", metavar="GITDIR", help="Read from this Git repository (bare or not).")(f)
    f = click.argument("path", required=False)(f)
    return f


def _counts(findings: Iterable[Finding]) -> dict[str, int]:
    out = {"errors": 0, "warnings": 0, "infos": 0}
    for f in findings:
        out[{"error": "errors", "warning": "warnings", "info": "infos"}[f.severity.value]] += 1
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _display_file(source: Source, path: str) -> str:
    if isinstance(source, DirectorySource) and str(source.root) not in (".", ""):
        return os.path.join(str(source.root), path)
    return path


# --- validate -----------------------------------------------------------------------------


@click.command("validate", help=_VALIDATE_HELP)
@_source_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text",
              show_default=True, help="Output format; json and sarif are for CI.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--max-file-size", type=click.IntRange(min=1), metavar="BYTES",
              help="Files larger than this are not read (default 1048576).")
@click.option("--max-documents", type=click.IntRange(min=1), metavar="N",
              help="Most documents read from the whole repo (default 200000).")
@click.option("--explain", metavar="CODE", help="Print what a finding code means, and exit.")
@click.option("--list-codes", is_flag=True, help="Print every finding code, and exit.")
def validate_command(
    path: str | None, repo: str | None, rev: str | None, fmt: str, strict: bool,
    max_file_size: int | None, max_documents: int | None, explain: str | None, list_codes: bool,
) -> None:
    if list_codes:
        for code in sorted(CATALOGUE):
            entry = CATALOGUE[code]
            click.echo(f"{entry.code}  {entry.severity.value:<7}  {entry.summary}")
        return
    if explain is not None:
        c = CATALOGUE.get(explain.strip().upper())
        if c is None:
            _fail(f"unknown code {explain!r}; `meshcd validate --list-codes` lists them")
        click.echo(f"{c.code} ({c.severity.value}, {_STAGE.get(c.code[3], 'check')})")
        click.echo(f"  {c.summary}")
        detail = DETAILS.get(c.code)
        if detail:
            click.echo("")
            for line in detail.splitlines():
                click.echo(f"  {line}")
        click.echo("")
        click.echo("  Reported as `file:line:col: "
                   f"{c.severity.value} {c.code}: ...`; see docs/config-language.md.")
        return
    source = _source(path, repo, rev)
    result = _run(source, _limits(max_file_size, max_documents))
    counts = _counts(result.findings)
    if fmt == "json":
        click.echo(json.dumps(to_json(result), indent=2))
    elif fmt == "sarif":
        click.echo(json.dumps(to_sarif(result, _sarif_base(source)), indent=2))
    else:
        for f in result.findings:
            click.echo(f"{_display_file(source, str(f.location))}: {f.severity.value} {f.code}: "
                       f"{f.message}")
        click.echo(summary_line(result, counts))
    failed = counts["errors"] > 0 or (strict and counts["warnings"] > 0)
    sys.exit(1 if failed else 0)


def summary_line(result: ValidationResult, counts: dict[str, int]) -> str:
    scope = (f"{result.source}: {_plural(result.files, 'file')}, "
             f"{_plural(result.documents, 'document')}")
    parts = []
    if counts["errors"]:
        parts.append(_plural(counts["errors"], "error"))
    if counts["warnings"]:
        parts.append(_plural(counts["warnings"], "warning"))
    if counts["infos"]:
        parts.append(f"{counts['infos']} info")
    verdict = "ok" if counts["errors"] == 0 else "FAILED"
    return f"{scope}: {', '.join(parts) or 'no findings'}: {verdict}"


def to_json(result: ValidationResult) -> dict[str, Any]:
    counts = _counts(result.findings)
    return {
        "source": result.source,
        "ok": counts["errors"] == 0,
        "files": result.files,
        "documents": result.documents,
        "summary": counts,
        "findings": [
            {
                "code": f.code,
                "severity": f.severity.value,
                "message": f.message,
                "file": f.location.file,
                "line": f.location.line,
                "column": f.location.column,
            }
            for f in result.findings
        ],
    }


_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _sarif_base(source: Source) -> tuple[str, str | None]:
    """(prefix for result URIs, absolute root URI or None). A directory given as a relative
    path (`meshcd validate config/` in CI) gives URIs relative to the current directory,
    which is what code-scanning services expect; otherwise URIs are relative to the root."""
    if isinstance(source, DirectorySource):
        root = str(source.root)
        if not os.path.isabs(root):
            prefix = "" if os.path.normpath(root) == "." else os.path.normpath(root) + "/"
            return prefix.replace(os.sep, "/"), None
        return "", Path(root).resolve().as_uri() + "/"
    return "", None


def to_sarif(result: ValidationResult, base: tuple[str, str | None] = ("", None)) -> dict[str, Any]:
    """SARIF 2.1.0: one run, the whole catalogue as rules, one result per finding."""
    prefix, root_uri = base
    codes = sorted(CATALOGUE)
    index = {c: i for i, c in enumerate(codes)}
    try:
        version = metadata.version("meshcd")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "0"
    results = []
    for f in result.findings:
        loc: dict[str, Any] = {
            "artifactLocation": {"uri": prefix + f.location.file, "uriBaseId": "SRCROOT"}
        }
        if f.location.line > 0:
            loc["region"] = {"startLine": f.location.line,
                             "startColumn": max(f.location.column, 1)}
        results.append({
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f.message},
            "locations": [{"physicalLocation": loc}],
        })
    run: dict[str, Any] = {}
    if root_uri is not None:
        run["originalUriBaseIds"] = {"SRCROOT": {"uri": root_uri}}
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            **run,
            "tool": {"driver": {
                "name": "meshcd",
                "version": version,
                "rules": [
                    {
                        "id": c,
                        "shortDescription": {"text": CATALOGUE[c].summary},
                        "defaultConfiguration": {"level": _SARIF_LEVEL[CATALOGUE[c].severity]},
                    }
                    for c in codes
                ],
            }},
            "results": results,
        }],
    }


# --- show ---------------------------------------------------------------------------------


@click.command("show")
@_source_options
@click.option("--max-file-size", type=click.IntRange(min=1), metavar="BYTES",
              help="Files larger than this are not read (default 1048576).")
def show_command(path: str | None, repo: str | None, rev: str | None,
                 max_file_size: int | None) -> None:
    """Print a readable summary of a config repo's model: the mesh settings, services with
    their ports, subsets and endpoints, routes with their rules and weights, and policies.

    Documents with errors are left out; the error count is printed at the end
    (`meshcd validate` lists them). Exit status: 0, or 2 on a usage or I/O error."""
    source = _source(path, repo, rev)
    result = _run(source, _limits(max_file_size, None))
    for line in render_model(result.model):
        click.echo(line)
    counts = _counts(result.findings)
    click.echo("")
    click.echo(summary_line(result, counts))


def _labels(labels: Any) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "{}"


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1:
        return f"{round(s * 1000)}ms"
    return f"{s:g}s"


def render_model(model: ConfigModel) -> list[str]:
    out: list[str] = []
    mesh = model.mesh
    out.append("Mesh")
    if mesh is None:
        out.append("  (no Mesh document)")
    else:
        out += [
            f"  {mesh.name} ({mesh.file})",
            f"  trust domain     {mesh.trust_domain}",
            f"  root namespace   {mesh.root_namespace}",
            f"  mTLS             {mesh.mtls.mode}",
            f"  authorization    default {mesh.authorization.default}",
            f"  telemetry        tracing {mesh.telemetry.tracing_sampling_percent:g}%, "
            f"access log {mesh.telemetry.access_log_sampling_percent:g}%",
            f"  rollout default  {mesh.default_rollout_policy or '-'}",
        ]
    out.append("")
    out.append(f"Services ({len(model.services)})")
    for s in sorted(model.services, key=lambda s: (s.namespace, s.name)):
        out += _service_lines(s)
    out.append("")
    out.append(f"Routes ({len(model.routes)})")
    for r in sorted(model.routes, key=lambda r: (r.host.namespace, r.host.name, r.name)):
        out += _route_lines(r)
    out.append("")
    out.append(f"Traffic policies ({len(model.traffic_policies)})")
    for t in sorted(model.traffic_policies, key=lambda t: (t.namespace, t.name)):
        out += _traffic_lines(t)
    out.append("")
    out.append(f"Authorization policies ({len(model.authorization_policies)})")
    for a in sorted(model.authorization_policies, key=lambda a: (a.namespace, a.name)):
        out += _authz_lines(a)
    out.append("")
    out.append(f"Rollout policies ({len(model.rollout_policies)})")
    for p in sorted(model.rollout_policies, key=lambda p: (p.namespace, p.name)):
        out += _rollout_lines(p)
    return out


def _service_lines(s: Service) -> list[str]:
    egress = "any" if s.egress is None else (", ".join(map(str, s.egress)) or "none")
    lines = [f"  {s.ref}  (account {s.service_account}; may call: {egress})  [{s.file}]"]
    lines.append("    ports      " + ", ".join(f"{p.name} {p.number}/{p.protocol}" for p in s.ports))
    for sub in s.subsets:
        n = len(s.endpoints_in(sub))
        lines.append(f"    subset     {sub.name} {_labels(sub.labels)} ({_plural(n, 'endpoint')})")
    for e in s.endpoints:
        lines.append(f"    endpoint   {e.address} {_labels(e.labels)}")
    return lines


def _match_text(m: Match) -> str:
    parts = []
    if m.path is not None:
        parts.append(f"path {m.path.type} {m.path.value}")
    if m.methods:
        parts.append("methods " + ",".join(m.methods))
    for h in m.headers:
        parts.append(f"header {h.name} {h.type}" + ("" if h.type == "present"
                                                    else f" {getattr(h, h.type)}"))
    for q in m.query_params:
        parts.append(f"query {q.name} {q.type}" + ("" if q.type == "present"
                                                   else f" {getattr(q, q.type)}"))
    return " and ".join(parts) or "everything"


def _rule_lines(i: int, rule: RouteRule) -> list[str]:
    match = " or ".join(_match_text(m) for m in rule.matches) if rule.matches else "everything"
    lines = [f"    {i}. {rule.name or '(unnamed)'}: match {match}"]
    dests = ", ".join(
        f"{d.service}{'/' + d.subset if d.subset else ''}{':' + str(d.port) if d.port else ''} "
        f"{d.weight}%"
        for d in rule.destinations
    )
    lines.append(f"       -> {dests}")
    extras = []
    if rule.timeout is not None:
        extras.append(f"timeout {_seconds(rule.timeout)}")
    if rule.retries is not None:
        r = rule.retries
        extras.append(f"retries {r.attempts} x {_seconds(r.per_try_timeout)}"
                      + (f" on {','.join(r.retry_on)}" if r.retry_on else ""))
    if rule.fault is not None:
        if rule.fault.delay:
            extras.append(f"delay {_seconds(rule.fault.delay.fixed)} on "
                          f"{rule.fault.delay.percent:g}%")
        if rule.fault.abort:
            extras.append(f"abort {rule.fault.abort.http_status} on {rule.fault.abort.percent:g}%")
    if rule.mirror is not None:
        extras.append(f"mirror {rule.mirror.percent:g}% to {rule.mirror.service}"
                      + (f"/{rule.mirror.subset}" if rule.mirror.subset else ""))
    if extras:
        lines.append("       " + "; ".join(extras))
    return lines


def _route_lines(r: Route) -> list[str]:
    lines = [f"  {r.host}  (Route {r.namespace}/{r.name})  [{r.file}]"]
    for i, rule in enumerate(r.rules, 1):
        lines += _rule_lines(i, rule)
    return lines


def _traffic_lines(t: TrafficPolicy) -> list[str]:
    parts = []
    if t.load_balancer:
        parts.append(f"lb {t.load_balancer.type}")
    if t.connection_pool:
        cp = t.connection_pool
        parts.append(f"pool max {cp.max_connections or '-'} conns, "
                     f"connect timeout {_seconds(cp.connect_timeout)}")
    if t.outlier_detection:
        od = t.outlier_detection
        parts.append(f"outlier {od.consecutive_5xx or '-'}x5xx")
    if t.mtls:
        parts.append(f"mTLS {t.mtls.mode}")
    if t.subsets:
        parts.append("subsets " + ",".join(s.name for s in t.subsets))
    return [f"  {t.service}  ({t.namespace}/{t.name}) {'; '.join(parts) or '-'}  [{t.file}]"]


def _authz_lines(a: AuthorizationPolicy) -> list[str]:
    target = ("every service in " + a.namespace if a.selector is None
              else ", ".join(map(str, a.selector.services)) or "nothing")
    lines = [f"  {a.namespace}/{a.name}  {a.action} on {target}: "
             f"{_plural(len(a.rules), 'rule')}  [{a.file}]"]
    for rule in a.rules:
        parts = []
        for fr in rule.from_:
            src = fr.source
            for label, vals in (("principals", src.principals), ("namespaces", src.namespaces),
                                ("ipBlocks", src.ip_blocks), ("notPrincipals", src.not_principals),
                                ("notNamespaces", src.not_namespaces),
                                ("notIpBlocks", src.not_ip_blocks)):
                if vals:
                    parts.append(f"{label} {','.join(vals)}")
        for to in rule.to:
            op = to.operation
            for label, vals in (("methods", op.methods), ("paths", op.paths), ("ports", op.ports),
                                ("hosts", op.hosts), ("notMethods", op.not_methods),
                                ("notPaths", op.not_paths), ("notPorts", op.not_ports),
                                ("notHosts", op.not_hosts)):
                if vals:
                    parts.append(f"{label} {','.join(vals)}")
        for c in rule.when:
            parts.append(f"when {c.key}" + (f" in {','.join(c.values)}" if c.values else "")
                         + (f" not in {','.join(c.not_values)}" if c.not_values else ""))
        lines.append(f"    - {'; '.join(parts) or 'any request'}")
    return lines


def _rollout_lines(p: RolloutPolicy) -> list[str]:
    stages = " -> ".join(
        (f"{s.count} proxy" + ("" if s.count == 1 else "s") if s.count is not None
         else f"{s.percent:g}%") + f" (bake {_seconds(s.bake)})"
        for s in p.stages
    )
    covers = ", ".join(map(str, p.services)) or "(mesh default only)"
    a = p.analysis
    return [
        f"  {p.namespace}/{p.name}  covers {covers}  [{p.file}]",
        f"    stages     {stages}",
        f"    analysis   errors <= {a.max_error_rate_percent:g}%, p99 <= {a.max_p99_latency_ms:g}ms, "
        f"+{a.max_increase_over_baseline_percent:g}% over baseline, min {a.min_requests} requests, "
        f"confidence {a.confidence:g}, inconclusive: {a.on_inconclusive}",
        f"    on failure {p.on_failure}; on new commit {p.on_new_commit}",
    ]
