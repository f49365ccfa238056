"""`meshcd token`: API tokens with roles (create, list, revoke: reconciler.auth) and
`meshcd token join`, a single-use join token for a proxy (admin), printed once with the CA
fingerprint and the bootstrap URL that `meshcd proxy join` needs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reconciler.auth.token_cli import create_cmd, list_cmd, revoke_cmd
from reconciler.cli.api_client import ApiClient, api_options


@click.group("token")
def token_group() -> None:
    """API tokens with roles (viewer, operator, admin), and join tokens for proxies."""


for _command in (create_cmd, list_cmd, revoke_cmd):
    token_group.add_command(_command)


@token_group.command("join")
@api_options
@click.option("--service", required=True)
@click.option("--namespace", default="default", show_default=True)
@click.option("--ttl", type=click.FloatRange(1, 7 * 86400), default=3600.0, show_default=True,
              help="Seconds the token stays valid.")
@click.option("--json", "as_json", is_flag=True)
def join(data_dir: Path, api_url: str | None, token: str | None, service: str, namespace: str,
         ttl: float, as_json: bool) -> None:
    """Create a join token (shown once; the audit keeps only its id)."""
    doc = ApiClient.from_options(data_dir, api_url, token).post(
        "/api/tokens/join", {"service": service, "namespace": namespace, "ttl_s": ttl})
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(f"token:          {doc['token']}")
    click.echo(f"expires:        {doc['expiresAt']}")
    click.echo(f"ca fingerprint: {doc['caFingerprint']}")
    click.echo(f"join with:      meshcd proxy join --controller {doc['bootstrapUrl']} --token-file "
               f"FILE --service {service} --namespace {namespace} "
               f"--ca-fingerprint {doc['caFingerprint']}")
    click.echo("                (FILE holds the token; or set MESHCD_JOIN_TOKEN. --token works "
               "too, but shows in `ps`.)")


@click.command("refresh")
@api_options
def refresh(data_dir: Path, api_url: str | None, token: str | None) -> None:
    """Ask the controller to fetch the repo now (admin)."""
    doc = ApiClient.from_options(data_dir, api_url, token).post("/api/refresh")
    click.echo(f"refresh {doc['result']} (as {doc['actor']})")
