"""The `meshcd` command. Subcommands load lazily so that `meshcd proxy ...` on a proxy host
never imports git, web or database code."""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> "module:attribute" of a click command. One line per top-level command.
COMMANDS: dict[str, str] = {
    "proxy": "reconciler.cli.proxy_cmd:proxy",
    "webhook": "reconciler.cli.webhook_cmd:webhook",
    "validate": "reconciler.cli.validate_cmd:validate_command",
    "show": "reconciler.cli.validate_cmd:show_command",
    "plan": "reconciler.cli.plan_cmd:plan",
    "render": "reconciler.cli.render_cmd:render_command",
    "serve": "reconciler.cli.serve_cmd:serve",
    "status": "reconciler.cli.status_cmd:status",
    "proxies": "reconciler.cli.status_cmd:proxies",
    "history": "reconciler.cli.status_cmd:history",
    "audit": "reconciler.cli.audit_cmd:audit",
    "token": "reconciler.cli.token_cmd:token_group",
    "refresh": "reconciler.cli.token_cmd:refresh",
    "rollout": "reconciler.cli.rollout_cmd:rollout",
    "rollback": "reconciler.cli.rollout_cmd:rollback",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*COMMANDS, *super().list_commands(ctx)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = target.split(":")
        command: Any = getattr(importlib.import_module(module_name), attr)
        return command  # type: ignore[no-any-return]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meshcd")
def cli() -> None:
    """meshcd: continuous delivery for service-mesh config.

    Validate a config repo, render one config per proxy, roll it out in canary stages,
    and keep a tamper-evident audit trail.
    """


def main() -> None:
    cli()
