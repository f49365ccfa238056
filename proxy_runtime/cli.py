"""`meshcd proxy ...`: run the managed proxy. Imports only proxy_runtime."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from pathlib import Path

import click

# Subcommands of other modules, imported only when used: `meshcd proxy run` must not load the
# agent's client stack (about 12 MB of RSS in every proxy).
LAZY_COMMANDS: dict[str, str] = {
    "join": "proxy_runtime.agent.cli:join",  # meshcd proxy join (the agent, #5)
}


class _ProxyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group("proxy", cls=_ProxyGroup)
def proxy() -> None:
    """The managed proxy (data plane)."""


@proxy.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="Snapshot JSON file to serve (static mode). SIGHUP reloads it.")
@click.option("--state-dir", type=click.Path(path_type=Path),
              help="Where the last good snapshot is kept; loaded at start without --config.")
@click.option("--admin-port", type=int, default=15000, show_default=True,
              help="Admin API port (0: any free port, printed at start).")
@click.option("--admin-address", default="127.0.0.1", show_default=True)
@click.option("--drain-seconds", type=float, default=10.0, show_default=True,
              help="On SIGTERM, how long in-flight requests may take before exit.")
@click.option("--header-timeout", type=float, default=10.0, show_default=True,
              help="Seconds a client may take to send request headers (then 408).")
@click.option("--body-timeout", type=float, default=60.0, show_default=True,
              help="Longest pause while a request body is read (then 408).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def run(config_path: Path | None, state_dir: Path | None, admin_port: int, admin_address: str,
        drain_seconds: float, header_timeout: float, body_timeout: float, log_level: str) -> None:
    """Run a proxy from a snapshot file (or the state dir's last good snapshot)."""
    from proxy_runtime.config import SnapshotError
    from proxy_runtime.config.compile import compile_snapshot
    from proxy_runtime.config.files import loads_snapshot

    if config_path is None and state_dir is None:
        raise click.UsageError("give --config FILE, or --state-dir DIR holding a snapshot")
    if config_path is not None:
        try:
            text = config_path.read_bytes()
        except OSError as exc:
            click.echo(f"error: cannot read {config_path}: {exc.strerror or exc}", err=True)
            sys.exit(2)
        try:
            compile_snapshot(loads_snapshot(text))
        except SnapshotError as exc:
            click.echo(f"error: {config_path}: {exc}", err=True)
            sys.exit(2)
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from proxy_runtime.dataplane.downstream import ServerLimits
    from proxy_runtime.serve import ProxyProcess

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    process = ProxyProcess(config_path=config_path, state_dir=state_dir, admin_address=admin_address,
                           admin_port=admin_port, drain_seconds=drain_seconds,
                           limits=ServerLimits(header_timeout=header_timeout,
                                               body_timeout=body_timeout))
    sys.exit(asyncio.run(process.run()))

