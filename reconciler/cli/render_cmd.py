"""`meshcd render`: a config repo as native proxy snapshots or another mesh's config."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from reconciler.language.sources import ConfigReadError, DirectorySource, Source
from reconciler.language.validate import validate

_FORMATS = ("native", "envoy", "istio", "linkerd", "gateway-api")

_HELP = """Render a config repo: one config per proxy (native, envoy) or another mesh's
resources (istio, linkerd, gateway-api).

PATH is a directory (default: the current one); with --repo, files are read from a Git
revision (--rev, default HEAD) without a checkout, PATH being the config folder in it.
The repo is validated first. The fleet is one proxy per static endpoint of every Service.

With --out DIR, files are written under DIR (one per proxy, or per resource); without it
they go to stdout, each after a `# <path>` line (YAML files separated by `---`). Warnings
about what the format cannot express go to stderr.

Exit status: 0 rendered; 1 the repo is invalid (its findings are printed); 2 usage or I/O
error.
"""


def _fail(message: str) -> NoReturn:
    click.echo(f"meshcd: {message}", err=True)
    sys.exit(2)


def _source(path: str | None, repo: str | None, rev: str | None) -> Source:
    if rev is not None and repo is None:
        _fail("--rev needs --repo")
    try:
        if repo is not None:
            from reconciler.source.tree import GitTreeSource  # git only when a repo is read

            return GitTreeSource(repo, rev or "HEAD", subdir=path or "")
        return DirectorySource(path or ".")
    except ConfigReadError as e:
        _fail(str(e))


def _write(out: Path, files: dict[str, str]) -> None:
    try:
        for rel, text in files.items():
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror or e}")


def _print(files: dict[str, str]) -> None:
    if len(files) == 1:
        click.echo(next(iter(files.values())), nl=False)
        return
    for rel, text in files.items():
        if rel.endswith(".yaml"):
            body = text[4:] if text.startswith("---\n") else text
            click.echo(f"---\n# {rel}\n{body}", nl=False)
        else:
            click.echo(f"# {rel}\n{text}", nl=False)


@click.command("render", help=_HELP)
@click.argument("path", required=False)
@click.option("--repo", metavar="GITDIR", help="Read the config from this Git repository.")
@click.option("--rev", metavar="REV", help="The revision to read (with --repo; default HEAD).")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default="native", show_default=True)
@click.option("--proxy", "proxy_id", metavar="ID", help="Only this proxy (native, envoy).")
@click.option("--out", "out_dir", metavar="DIR", help="Write files here instead of stdout.")
@click.option("--envoy-root", default=None, metavar="DIR",
              help="envoy: where the files will live on the proxy host (default "
                   "/etc/meshcd/envoy); the bootstrap names <DIR>/<proxy>/lds.yaml etc.")
def render_command(path: str | None, repo: str | None, rev: str | None, fmt: str,
                   proxy_id: str | None, out_dir: str | None, envoy_root: str | None) -> None:
    from renderers import default_fleet
    from renderers.exporters import DEFAULT_ROOT, PER_PROXY, export

    if proxy_id is not None and fmt not in PER_PROXY:
        _fail(f"--proxy applies to --format native and envoy, not {fmt}")
    if envoy_root is not None and (fmt != "envoy" or not envoy_root.startswith("/")):
        _fail("--envoy-root takes an absolute path, with --format envoy")
    if out_dir is not None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        _fail(f"--out {out_dir} is not a directory")
    source = _source(path, repo, rev)
    try:
        result = validate(source)
    except ConfigReadError as e:
        _fail(str(e))
    if not result.ok:
        click.echo(f"meshcd: the config is invalid ({len(result.errors)} error(s)):", err=True)
        for f in result.errors:
            click.echo(f"{f.location}: {f.severity.value} {f.code}: {f.message}", err=True)
        sys.exit(1)
    fleet = default_fleet(result.model)
    try:
        exported = export(fmt, result.model, fleet, proxy=proxy_id,
                          envoy_root=envoy_root or DEFAULT_ROOT)
    except ValueError as e:  # two objects would get one name: refuse rather than overwrite
        _fail(f"cannot export as {fmt}: {e}")
    except KeyError:
        known = ", ".join(p.id for p in list(fleet)[:10]) or "none"
        _fail(f"no proxy {proxy_id!r} in the fleet (proxies: {known}"
              f"{', ...' if len(fleet) > 10 else ''})")
    for w in exported.warnings:
        click.echo(f"meshcd: warning: {w}", err=True)
    if out_dir is not None:
        _write(Path(out_dir), exported.files)
        click.echo(f"meshcd: wrote {len(exported.files)} file(s) to {out_dir}", err=True)
    else:
        _print(exported.files)
