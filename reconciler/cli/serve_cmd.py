"""`meshcd serve`: the controller in one process. Settings from --config and MESHCD_* env."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click
import uvloop


@click.command("serve")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              envvar="MESHCD_CONFIG", help="Settings file (YAML). MESHCD_* variables override it.")
@click.option("--repo", help="Config repo URL (overrides source.url / MESHCD_REPO_URL).")
@click.option("--branch", help="Watched branch (default main).")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Data dir (default ./.meshcd).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(config_file: Path | None, repo: str | None, branch: str | None,
          data_dir: Path | None, log_level: str) -> None:
    """Run the controller: watch the repo, validate, plan and deploy each commit to the
    fleet, and serve the API, /metrics and the webhook receiver.

    Exit status: 0 after SIGTERM/SIGINT; 2 when the settings are bad or it cannot start
    (one line says what is wrong and what to do: a damaged or full database, a port in use).
    """
    import sqlalchemy

    from reconciler.controller.app import Controller
    from reconciler.controller.settings import SettingsError, load_settings
    from reconciler.errors import StartupError
    from reconciler.net.listener import raise_fd_limit
    from reconciler.store import StoreError
    from reconciler.store.engine import classify_error

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # the poll's every tick is not news
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    env = dict(os.environ)
    if repo:
        env["MESHCD_REPO_URL"] = repo
    if branch:
        env["MESHCD_BRANCH"] = branch
    if data_dir:
        env["MESHCD_DATA_DIR"] = str(data_dir.resolve())
    try:
        settings = load_settings(config_file, env)
    except SettingsError as exc:
        click.echo(f"meshcd serve: {exc}", err=True)
        sys.exit(2)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Controller(settings).run(stop)

    raise_fd_limit()  # every connection is a descriptor: take all the system allows
    try:
        # uvloop: besides speed, its TLS transport keeps no 256 KiB buffer per connection,
        # which is what keeps the fleet listener under 50 KB per connected proxy.
        uvloop.run(main())
    except StartupError as exc:
        click.echo(f"meshcd serve: {exc}", err=True)
        sys.exit(2)
    except StoreError as exc:
        click.echo(f"meshcd serve: {store_advice(exc, settings.store_url, settings.data_dir)}",
                   err=True)
        sys.exit(2)
    except sqlalchemy.exc.DBAPIError as exc:  # a driver error no shell translated
        kind = classify_error(exc)
        click.echo(f"meshcd serve: {store_advice(kind, settings.store_url, settings.data_dir)}",
                   err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"meshcd serve: {exc}", err=True)
        sys.exit(2)
    click.echo("meshcd serve: stopped", err=True)


def store_advice(exc: BaseException, store_url: str | None, data_dir: Path) -> str:
    """One line: what is wrong with the database and what to do about it."""
    from reconciler.store import StoreUnavailable
    from reconciler.store.errors import StoreCorrupt, StoreFull

    where = store_url or str(data_dir / "meshcd.db")
    if isinstance(exc, StoreCorrupt):
        return (f"{exc} ({where}); stop and restore it from a backup, or move it aside to "
                "start with an empty one (docs/controller.md, \"Storage problems\"); "
                "`meshcd audit verify --store URL` checks a copy")
    if isinstance(exc, StoreFull):
        return f"no space left for the database {where}: free some space and start again"
    if isinstance(exc, StoreUnavailable):
        return f"cannot use the database {where} ({exc}); check that it is reachable"
    return f"the database {where} cannot be used: {exc}"
