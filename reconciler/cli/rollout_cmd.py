"""`meshcd rollout status|watch|promote|pause|resume|abort` and `meshcd rollback`: the
operator's side of a canary rollout, through the controller's JSON API (docs/rollout.md,
"Rollouts from the command line").

Exit codes: 0 done / accepted / promoted; 1 refused by the controller (409: no rollout, or
the action does not fit its state; 404: unknown revision); 2 the controller is unreachable,
refused the token or failed; 3 a watched rollout ended without deploying (rolled back,
aborted, superseded, failed); 130 interrupted (Ctrl-C)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import click

from reconciler.cli.api_client import TOKEN_HINT, ApiClient, api_options, fail
from reconciler.rollout import Phase, RolloutStatus
from reconciler.rollout.view import render_final, render_rollout, short, watch_key

EXIT_REFUSED = 1
EXIT_NOT_DEPLOYED = 3
EXIT_INTERRUPTED = 130
# A watcher rides out a controller restart (or a failover) this long before it gives up.
RETRY_UNREACHABLE = 30.0
# Revision statuses after which a revision's rollout (or deploy) is over.
_TERMINAL = {"deployed", "failed", "rejected", "superseded", "invalid"}
_CLEAR = "\x1b[H\x1b[2J"

ActionFn = Callable[..., None]


def _client(data_dir: Path, api_url: str | None, token: str | None) -> ApiClient:
    return ApiClient.from_options(data_dir, api_url, token)


def outcome_exit_code(outcome: str | None, revision_status: str | None = None) -> int:
    """0 when the revision went out (promoted / deployed), 3 when it did not."""
    if outcome is not None:
        return 0 if outcome == "promoted" else EXIT_NOT_DEPLOYED
    return 0 if revision_status == "deployed" else EXIT_NOT_DEPLOYED


# --- the group ------------------------------------------------------------------------------


@click.group("rollout")
def rollout() -> None:
    """Follow and steer the canary rollout of the newest revision.

    \b
    Examples:
      meshcd rollout status                 where it is, canary vs baseline numbers
      meshcd rollout watch                  live view until it finishes (exit 0 promoted,
                                            3 rolled back / aborted / superseded)
      meshcd rollout pause --reason "checking dashboards"
      meshcd rollout resume                 continue (or, with no rollout, lift a pin)
      meshcd rollout promote [--full]       pass this stage now (--full: every proxy now)
      meshcd rollout abort --reason "p99 looks off"     roll back now

    Reads need a viewer token, actions an operator token (--token or MESHCD_TOKEN; on the
    controller's machine the data dir's admin.token is used).
    """


@rollout.command("status")
@api_options
@click.option("--json", "as_json", is_flag=True, help="The API's JSON (`GET /api/rollout`) as is.")
def status(data_dir: Path, api_url: str | None, token: str | None, as_json: bool) -> None:
    """The running rollout: stage and progress, canaries and baseline, canary vs baseline
    numbers per service, stage history; the pin banner when the fleet is pinned; "no rollout
    in progress" when nothing runs. Exit 0.

    \b
    Example:
      meshcd rollout status --token "$MESHCD_VIEWER_TOKEN"
    """
    doc = _client(data_dir, api_url, token).get("/api/rollout")
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(render_rollout(doc))


# --- watching -------------------------------------------------------------------------------


class Watcher:
    """Polls `GET /api/rollout` and draws it until the followed revision's rollout (or
    deploy) is over, then prints its final status and returns the exit code."""

    def __init__(self, client: ApiClient, interval: float, *, tty: bool,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.interval = interval
        self.tty = tty
        self.sleep = sleep
        self.monotonic = monotonic
        self._last_key: tuple[Any, ...] | None = None
        self._last_status: Mapping[str, Any] | None = None

    def draw(self, text: str, key: tuple[Any, ...], footer: str = "") -> None:
        if self.tty:
            click.echo(_CLEAR + text + (f"\n\n{footer}" if footer else ""))
        elif key != self._last_key:
            click.echo(text + "\n")
        self._last_key = key

    def finish(self, revision_id: int | None, fallback: Mapping[str, Any] | None) -> int:
        """Print how the followed revision ended; its exit code."""
        status: Mapping[str, Any] | None = None
        if revision_id is not None:
            code, doc = self.client.call("GET", f"/api/revisions/{revision_id}/rollout")
            if code == 200:
                status = doc
        status = status or fallback
        typed = None if status is None else RolloutStatus.from_json(status)
        rev_status: str | None = None
        if revision_id is not None and (typed is None or typed.outcome is None):
            rev = self.client.get(f"/api/revisions/{revision_id}")
            rev_status = str(rev.get("status"))
            reason = f": {rev['reason']}" if rev.get("reason") else ""
            if self.tty:
                click.echo(_CLEAR, nl=False)
            click.echo(f"revision {revision_id} ({short(rev.get('commit'))}) is {rev_status}"
                       f"{reason}")
            return outcome_exit_code(rev.get("outcome"), rev_status)
        assert status is not None and typed is not None
        if self.tty:
            click.echo(_CLEAR, nl=False)
        click.echo(render_final(status))
        outcome = None if typed.outcome is None else typed.outcome.outcome.value
        who = (f"revision {revision_id}" if revision_id is not None
               else f"rollout {short(typed.revision)}")
        click.echo(f"{who}: {str(outcome).replace('_', ' ')}")
        return outcome_exit_code(outcome, rev_status)

    def _revision_status(self, revision_id: int) -> str:
        return str(self.client.get(f"/api/revisions/{revision_id}").get("status"))

    def run(self, *, follow: int | None = None, once: bool = False,
            wait_start: float = 0.0) -> int:
        """`follow`: the revision id to follow (rollback --watch); None: the rollout running
        now (or the first that starts within `wait_start` seconds)."""
        followed = follow
        followed_commit: str | None = None
        give_up = self.monotonic() + wait_start
        footer = f"every {self.interval:g}s; Ctrl-C to stop watching (the rollout goes on)"
        while True:
            doc = self.client.get("/api/rollout")
            # Reached once: from now on ride out a controller restart instead of exiting.
            self.client.retry_unreachable = RETRY_UNREACHABLE
            raw = doc.get("rollout")
            st = None if raw is None else RolloutStatus.from_json(raw)
            running_id = None if st is None else st.revision_id
            if st is not None and followed is None and followed_commit is None:
                # Follow the rollout running now (by its revision id, or its commit from an
                # API that gives none).
                followed = running_id
                followed_commit = None if running_id is not None else st.revision
            ours = st is not None and (
                (followed is not None and running_id == followed)
                or (followed_commit is not None and st.revision == followed_commit))
            if ours and st is not None and raw is not None:
                self._last_status = raw
                if st.phase is Phase.DONE:
                    return self.finish(followed, raw)
            if once:
                click.echo(render_rollout(doc))
                return 0
            if not ours:
                if followed is not None and (self._last_status is not None or follow is not None):
                    # Not (or no longer) the running rollout: over, or not started yet.
                    if self._revision_status(followed) in _TERMINAL:
                        return self.finish(followed, self._last_status)
                elif followed_commit is not None:
                    return self.finish(None, self._last_status)  # no id to ask about
                elif st is None and self.monotonic() >= give_up:
                    click.echo(render_rollout(doc))
                    return 0
            text = render_rollout(doc)
            if follow is not None and not ours:
                text += f"\nwaiting for revision {follow} to roll out"
            elif st is None:
                text += f"\nwaiting up to {wait_start:g}s for a rollout to start"
            self.draw(text, watch_key(doc), footer)
            self.sleep(self.interval)


def _watch(client: ApiClient, interval: float, **kw: Any) -> NoReturn:
    tty = sys.stdout.isatty()
    try:
        code = Watcher(client, interval, tty=tty).run(**kw)
    except KeyboardInterrupt:
        if tty:
            click.echo("")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


@rollout.command("watch")
@api_options
@click.option("--interval", type=click.FloatRange(0.05, 60), default=1.0, show_default=True,
              metavar="S", help="Seconds between polls.")
@click.option("--once", is_flag=True, help="Draw the status once and exit.")
@click.option("--wait", "wait_start", type=click.FloatRange(0, 86400), default=0.0,
              show_default=True, metavar="S",
              help="When no rollout runs, wait up to S seconds for one to start "
                   "(e.g. right after a push).")
def watch(data_dir: Path, api_url: str | None, token: str | None, interval: float, once: bool,
          wait_start: float) -> None:
    """Follow the running rollout live until it finishes, then print its final status
    (outcome, every stage, the deciding check's canary vs baseline numbers and thresholds).

    On a terminal the screen is redrawn every interval; otherwise (a pipe, a CI log) a new
    block is printed only when the rollout moves (phase, stage, canaries, verdicts).

    \b
    Exit codes:
      0    promoted; or no rollout was running (after --wait); or --once
           on a rollout that is still running
      3    the watched rollout was rolled back, aborted or superseded
      2    token refused; controller unreachable (once watching: for 30 s)
      130  Ctrl-C (the rollout itself goes on)

    \b
    Examples:
      meshcd rollout watch
      git push && meshcd rollout watch --wait 60 && echo promoted
      meshcd rollout watch --once
    """
    client = _client(data_dir, api_url, token)
    client.timeout = min(client.timeout, 10.0)
    _watch(client, interval, once=once, wait_start=wait_start)


# --- actions --------------------------------------------------------------------------------


def _act(client: ApiClient, action: str, reason: str | None) -> NoReturn:
    if not client.token:
        fail(f"rollout actions need an operator token: {TOKEN_HINT}")
    body = {"reason": reason} if reason else {}
    code, doc = client.call("POST", f"/api/rollout/{action}", body)
    if code < 300:
        actor = f" (as {doc['actor']})" if doc.get("actor") else ""
        click.echo(f"{doc.get('message', action + ' accepted')}{actor}")
        sys.exit(0)
    if code == 409:
        click.echo(f"meshcd: {action} refused: {doc['error']}", err=True)
        sys.exit(EXIT_REFUSED)
    fail(f"{action}: {code} {doc['error']}", EXIT_REFUSED)


_reason = click.option("--reason", metavar="TEXT", help="Why (kept in the audit trail).")


@rollout.command("promote")
@api_options
@click.option("--full", is_flag=True,
              help="Push every remaining proxy now and finish once they ACK (skips the "
                   "remaining stages and their judging).")
@_reason
def promote(data_dir: Path, api_url: str | None, token: str | None, full: bool,
            reason: str | None) -> None:
    """Pass the current stage now and start the next one (operator).

    \b
    Examples:
      meshcd rollout promote --reason "numbers look fine"
      meshcd rollout promote --full --reason "hotfix, skip the bake"
    """
    _act(_client(data_dir, api_url, token), "promote-full" if full else "promote", reason)


@rollout.command("pause")
@api_options
@_reason
def pause(data_dir: Path, api_url: str | None, token: str | None, reason: str | None) -> None:
    """Stop the rollout's clock: no stage is judged or started until `resume` (operator).

    \b
    Example:
      meshcd rollout pause --reason "checking the dashboards"
    """
    _act(_client(data_dir, api_url, token), "pause", reason)


@rollout.command("resume")
@api_options
@_reason
def resume(data_dir: Path, api_url: str | None, token: str | None, reason: str | None) -> None:
    """Continue a paused rollout (the stage bakes again from scratch); with no rollout
    running but the fleet pinned (after `meshcd rollback`), lift the pin: the newest held
    revision is deployed (operator).

    \b
    Example:
      meshcd rollout resume --reason "false alarm"
    """
    _act(_client(data_dir, api_url, token), "resume", reason)


@rollout.command("abort")
@api_options
@_reason
def abort(data_dir: Path, api_url: str | None, token: str | None, reason: str | None) -> None:
    """Roll the running rollout back now; the revision becomes `rejected` (operator).

    \b
    Example:
      meshcd rollout abort --reason "p99 looks off on checkout"
    """
    _act(_client(data_dir, api_url, token), "abort", reason)


# --- rollback -------------------------------------------------------------------------------


@click.command("rollback")
@api_options
@click.option("--to", "to", type=click.IntRange(1), metavar="REV",
              help="The revision id to go back to (default: the deployed revision before "
                   "the current one). See `meshcd history`.")
@click.option("--fast", is_flag=True,
              help="Deploy the target to every proxy at once instead of in canary stages.")
@click.option("--revert", is_flag=True,
              help="Also push a revert commit to the watched branch, so Git says what the "
                   "fleet runs.")
@_reason
@click.option("--watch", "then_watch", is_flag=True,
              help="Then follow the rollback's rollout like `meshcd rollout watch` (and exit "
                   "with its code).")
@click.option("--interval", type=click.FloatRange(0.05, 60), default=1.0, show_default=True,
              metavar="S", help="With --watch: seconds between polls.")
def rollback(data_dir: Path, api_url: str | None, token: str | None, to: int | None,
             fast: bool, revert: bool, reason: str | None, then_watch: bool,
             interval: float) -> None:
    """Go back to an earlier deployed revision (operator).

    A running rollout is aborted first. The target's config is deployed as a new revision
    (trigger "rollback"), and the fleet is pinned to it: new commits are held (left
    `planned`) until `meshcd rollout resume` lifts the pin.

    \b
    Exit codes: 0 accepted (with --watch: the rollback deployed); 1 refused (nothing to
    roll back to, the target was never deployed, unknown revision, or --revert could not
    push); 2 controller unreachable or token refused; 3 with --watch: it did not deploy.

    \b
    Examples:
      meshcd rollback --reason "checkout 5xx after #41"
      meshcd rollback --to 38 --fast --watch
      meshcd rollback --to 38 --revert --reason "revert the retry change"
    """
    client = _client(data_dir, api_url, token)
    if not client.token:
        fail(f"rollback needs an operator token: {TOKEN_HINT}")
    body = {"to": to, "fast": fast, "revert": revert, "reason": reason or ""}
    code, doc = client.call("POST", "/api/rollback", body)
    if code >= 300:
        click.echo(f"meshcd: rollback refused: {doc['error']}", err=True)
        sys.exit(EXIT_REFUSED)
    target = doc.get("target")
    how = "all at once (--fast)" if fast else "in canary stages"
    click.echo(f"rolling back to revision {target}: deploying commit {short(doc.get('commit'))} "
               f"as revision {doc.get('revision')}, {how}"
               + (f" (as {doc['actor']})" if doc.get("actor") else ""))
    click.echo(f"  pinned: the fleet stays on revision {target}; new commits are held until "
               "`meshcd rollout resume`")
    if doc.get("revertCommit"):
        click.echo(f"  revert commit {doc['revertCommit']} pushed to the branch")
    if not then_watch:
        sys.exit(0)
    client.timeout = min(client.timeout, 10.0)
    _watch(client, interval, follow=int(doc["revision"]))
