"""`meshcd webhook ...`: check a forge hook setup without the controller.

    meshcd webhook test --forge github --secret-file hook.secret \\
        --url http://127.0.0.1:8080/webhooks/github --repo https://github.com/acme/mesh-config
    meshcd webhook listen --repo https://github.com/acme/mesh-config \\
        --secret github=file:hook.secret --port 8080
"""

from __future__ import annotations

import dataclasses
import json
import sys
from urllib.parse import urlsplit, urlunsplit

import click

from webhooks.adapters import FORGES
from webhooks.sample import build_sample
from webhooks.settings import MIB, ReceiverSettingsError, secret_from_file

DEFAULT_SAMPLE_REPO = "https://git.example.com/meshcd/sample-config.git"


@click.group()
def webhook() -> None:
    """Forge webhooks: send a signed sample, or run a receiver that prints deliveries."""


def _endpoint(url: str, forge: str) -> str:
    """Accept the full endpoint, or a base URL (then /webhooks/<forge> is appended)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter("must be an http(s) URL", param_hint="--url")
    path = parts.path.rstrip("/")
    if path.rsplit("/", 2)[-2:-1] == ["webhooks"]:
        return url
    return urlunsplit(parts._replace(path=f"{path}/webhooks/{forge}"))


@webhook.command("test")
@click.option("--forge", type=click.Choice(FORGES), required=True)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False),
    required=True,
    help="File holding the hook secret (a trailing newline is ignored).",
)
@click.option(
    "--url",
    required=True,
    help="Receiver endpoint, e.g. http://127.0.0.1:8080/webhooks/github "
    "(a base URL gets /webhooks/<forge> appended).",
)
@click.option(
    "--repo",
    default=DEFAULT_SAMPLE_REPO,
    show_default=True,
    help="Repository URL the sample push names (use the watched one to see 202).",
)
@click.option("--branch", default="main", show_default=True)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds.")
def test_cmd(
    forge: str, secret_file: str, url: str, repo: str, branch: str, timeout: float
) -> None:
    """Send one correctly signed sample push, print the receiver's answer.

    Exits 0 on a 2xx answer, 1 on any other status, 2 when the receiver cannot be reached."""
    import httpx

    try:
        secret = secret_from_file(secret_file)
    except ReceiverSettingsError as err:
        raise click.UsageError(str(err)) from None
    target = _endpoint(url, forge)
    try:
        sample = build_sample(forge, secret, repo_url=repo, branch=branch)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--repo") from None
    delivery = next(
        (
            v
            for k, v in sample.headers.items()
            if k.lower().endswith(("delivery", "uuid", "request-id"))
        ),
        "?",
    )
    click.echo(f"POST {target}  forge={forge} delivery={delivery} ref=refs/heads/{branch}")
    try:
        response = httpx.post(target, content=sample.body, headers=sample.headers, timeout=timeout)
    except httpx.HTTPError as err:
        click.echo(f"error: could not reach {target}: {err}", err=True)
        sys.exit(2)
    try:
        answer = response.json()
    except ValueError:
        answer = {"body": response.text[:300]}
    result = answer.get("result", "?") if isinstance(answer, dict) else "?"
    reason = answer.get("reason", "") if isinstance(answer, dict) else ""
    click.echo(f"{response.status_code} {result} {reason}".rstrip())
    if isinstance(answer, dict) and answer.get("detail"):
        click.echo(f"  detail: {answer['detail']}")
    if not 200 <= response.status_code < 300:
        click.echo(
            f"error: the receiver refused the delivery ({response.status_code} "
            f"{reason or 'no reason given'})",
            err=True,
        )
        sys.exit(1)
    if result == "ignored":
        click.echo(
            "  note: signature accepted, but the push was not for the watched "
            "repository/branch; pass --repo/--branch to match them."
        )


@webhook.command("listen")
@click.option("--repo", required=True, help="Watched repository URL (any form).")
@click.option("--branch", default="main", show_default=True, help="Watched branch.")
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    required=True,
    metavar="FORGE=SOURCE",
    help="Per forge: FORGE=file:PATH or FORGE=env:NAME. Repeatable.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--max-body-bytes", type=int, default=MIB, show_default=True)
@click.option("--body-timeout", type=float, default=10.0, show_default=True, help="Seconds.")
def listen_cmd(
    repo: str,
    branch: str,
    secrets: tuple[str, ...],
    host: str,
    port: int,
    max_body_bytes: int,
    body_timeout: float,
) -> None:
    """Run the webhook receiver alone and print one JSON line per delivery.

    Lines with "result": "accepted" are what would trigger a refresh in `meshcd serve`."""
    import uvicorn
    from fastapi import FastAPI

    from webhooks.model import DeliveryRecord, RefUpdate
    from webhooks.receiver import make_router
    from webhooks.settings import ReceiverSettings

    sources: dict[str, str] = {}
    for item in secrets:
        forge, sep, source = item.partition("=")
        if not sep or forge not in FORGES:
            raise click.BadParameter(
                f"{item!r}: expected FORGE=SOURCE with FORGE one of {', '.join(FORGES)}",
                param_hint="--secret",
            )
        sources[forge] = source
    try:
        settings = ReceiverSettings.from_sources(
            watched_repo=repo,
            watched_branch=branch,
            secret_sources=sources,
            max_body_bytes=max_body_bytes,
            body_timeout_s=body_timeout,
        )
    except ReceiverSettingsError as err:
        raise click.UsageError(str(err)) from None

    def on_update(update: RefUpdate) -> None:
        click.echo(json.dumps({"update": dataclasses.asdict(update)}), nl=True)

    def on_audit(record: DeliveryRecord) -> None:
        click.echo(json.dumps({"delivery": dataclasses.asdict(record)}), nl=True)

    app = FastAPI(title="meshcd webhook receiver")
    app.include_router(make_router(settings, on_update, on_audit))
    click.echo(
        f"listening on http://{host}:{port}/webhooks/{{{','.join(sorted(sources))}}} "
        f"for {repo} {branch}",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
