"""`meshcd plan`: what a revision of the config repo would change, before it ships."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from reconciler.language.sources import ConfigReadError
from reconciler.language.validate import ValidationCache, ValidationResult, validate
from reconciler.source.tree import GitTreeSource

_HELP = """Show what going from one revision of a config repo to another would change.

Reads both revisions straight from Git (no checkout) and prints three diffs: the resources
(documents added, changed, removed, field by field), the proxies (which proxies' configs
change, per service, and a diff of each distinct change) and the access matrix (which
caller -> service, port, method, path now flips allowed/denied).

Without --from the plan is against nothing (everything is new); for a pull request use
e.g. --from origin/main --to HEAD. The fleet is one proxy per static endpoint.

Exit status: 0 plan printed; 1 the target revision is invalid (its findings are printed);
2 usage or I/O error (not a repository, unknown revision).
"""


def _fail(message: str) -> NoReturn:
    click.echo(f"meshcd: {message}", err=True)
    sys.exit(2)


def _load(repo: object, rev: str, cache: ValidationCache) -> tuple[ValidationResult, str]:
    try:
        source = GitTreeSource(repo, rev)
        return validate(source, cache), str(source.commit_id)
    except ConfigReadError as e:
        _fail(str(e))


@click.command("plan", help=_HELP)
@click.option("--repo", required=True, metavar="GITDIR", help="The config repo (bare or not).")
@click.option("--from", "from_rev", metavar="REV", help="The revision deployed now (default: nothing).")
@click.option("--to", "to_rev", required=True, metavar="REV", help="The revision to plan.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True, help="markdown fits a pull-request comment.")
def plan(repo: str, from_rev: str | None, to_rev: str, fmt: str) -> None:
    import pygit2

    from reconciler.plan import format_plan
    from reconciler.plan import plan as make_plan

    try:
        git = pygit2.Repository(repo)
    except (pygit2.GitError, KeyError, OSError):
        _fail(f"not a git repository: {repo}")
    cache = ValidationCache()
    old = None
    old_id = None
    if from_rev is not None:
        old_result, old_id = _load(git, from_rev, cache)
        if not old_result.ok:
            click.echo(f"meshcd: warning: --from {from_rev} has {len(old_result.errors)} "
                       "error(s); planning against what of it loaded", err=True)
        old = old_result.model
    new_result, new_id = _load(git, to_rev, cache)
    if not new_result.ok:
        click.echo(f"meshcd: --to {to_rev} ({new_id[:12]}) is invalid:", err=True)
        for f in new_result.errors:
            click.echo(f"{f.location}: {f.severity.value} {f.code}: {f.message}", err=True)
        sys.exit(1)
    p = make_plan(
        old, new_result.model,
        from_rev=f"{from_rev} ({old_id[:12]})" if from_rev and old_id else None,
        to_rev=f"{to_rev} ({new_id[:12]})",
    )
    click.echo(format_plan(p, fmt), nl=False)
