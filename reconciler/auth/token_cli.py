"""`meshcd token create|list|revoke`: API tokens with roles, straight on the store.

The `token` group here can stand alone, or its commands can be added to another `token`
group: `group.add_command(create_cmd)`, `list_cmd`, `revoke_cmd`.

    meshcd token create --role operator --name alice [--data-dir DIR | --store URL]
    meshcd token list
    meshcd token revoke ID

The secret is printed once by `create` and never again; `list` shows ids, names and roles.
Works without a running controller (it opens the same database the controller uses).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from reconciler.auth.roles import ROLES
from reconciler.auth.tokens import ApiTokens
from reconciler.store.engine import sqlite_url

DEFAULT_DATA_DIR = ".meshcd"


def _open(store: str | None, data_dir: str) -> ApiTokens:
    return ApiTokens.open(store or sqlite_url(data_dir))


_store_option = click.option(
    "--store",
    envvar="MESHCD_STORE",
    default=None,
    help="Database URL (postgresql+psycopg://... or sqlite:///...); default: the data dir's SQLite file.",
)
_data_dir_option = click.option(
    "--data-dir",
    envvar="MESHCD_DATA_DIR",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
)


@click.group()
def token() -> None:
    """API tokens with roles: viewer (read), operator (act on rollouts), admin (tokens)."""


@token.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--name", required=True, help="Who or what holds it (shown in the audit trail).")
@_store_option
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, role, token} as JSON.")
def create_cmd(role: str, name: str, store: str | None, data_dir: str, as_json: bool) -> None:
    """Create a token and print it once (only its SHA-256 is stored)."""
    tokens = _open(store, data_dir)
    try:
        made = tokens.create(role, name, now=datetime.now(UTC))
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--name") from None
    finally:
        tokens.close()
    if as_json:
        click.echo(
            json.dumps(
                {"id": made.id, "name": made.name, "role": made.role.value, "token": made.token}
            )
        )
        return
    click.echo(
        f"id:    {made.id}\nname:  {made.name}\nrole:  {made.role.value}\ntoken: {made.token}"
    )
    click.echo("Keep the token now: it is not shown again.", err=True)


@token.command("list")
@_store_option
@_data_dir_option
@click.option("--json", "as_json", is_flag=True)
def list_cmd(store: str | None, data_dir: str, as_json: bool) -> None:
    """List tokens (ids, names, roles, state; never secrets)."""
    tokens = _open(store, data_dir)
    try:
        infos = tokens.list()
    finally:
        tokens.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": i.id,
                        "name": i.name,
                        "role": i.role.value,
                        "createdAt": i.created_at.isoformat(),
                        "revokedAt": i.revoked_at.isoformat() if i.revoked_at else None,
                    }
                    for i in infos
                ]
            )
        )
        return
    click.echo(f"{'ID':<16}  {'ROLE':<8}  {'STATE':<7}  {'CREATED':<20}  NAME")
    for i in infos:
        state = "active" if i.active else "revoked"
        created = i.created_at.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{i.id:<16}  {i.role.value:<8}  {state:<7}  {created:<20}  {i.name}")


@token.command("revoke")
@click.argument("token_id")
@_store_option
@_data_dir_option
def revoke_cmd(token_id: str, store: str | None, data_dir: str) -> None:
    """Revoke a token by id (its web sessions end too). Exits 1 if unknown or already revoked."""
    tokens = _open(store, data_dir)
    try:
        done = tokens.revoke(token_id, now=datetime.now(UTC))
    finally:
        tokens.close()
    if not done:
        click.echo(f"no active token with id {token_id}", err=True)
        raise SystemExit(1)
    click.echo(f"revoked {token_id}")
