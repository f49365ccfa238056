"""`meshcd proxy`: the proxy's own commands (run, join), loaded lazily from proxy_runtime, plus
the controller-side `meshcd proxy token create`.

The proxy commands live in proxy_runtime so that a proxy host runs them without any
controller code; this group only adds the token command, imported when it is asked for."""

from __future__ import annotations

import importlib

import click


def _runtime_group() -> click.Group:
    group: click.Group = importlib.import_module("proxy_runtime.cli").proxy
    return group


def _token_group() -> click.Group:
    from reconciler.cli.token_cmd import join

    group = click.Group("token", help="Join tokens a new proxy bootstraps its identity with.")
    group.add_command(join, name="create")
    return group


class _ProxyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*_runtime_group().list_commands(ctx), "token"})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "token":
            return _token_group()
        return _runtime_group().get_command(ctx, cmd_name)


@click.group("proxy", cls=_ProxyGroup)
def proxy() -> None:
    """The managed proxy: run one from a snapshot file, join a controller, or (on the
    controller) create the join token a new proxy bootstraps with."""
