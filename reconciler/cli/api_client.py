"""How the CLI reaches a running controller: the API URL and bearer token from the data dir
(or --api / MESHCD_API and --token / MESHCD_TOKEN), stdlib HTTP, clear errors (exit 2).

Every request carries the token when one is known: reads need a viewer token, rollout and
rollback actions an operator token, token management the admin token. Without --token /
MESHCD_TOKEN the data dir's admin.token is used (on the controller's own machine)."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

TOKEN_HINT = ("give --token, set MESHCD_TOKEN, or run where the data dir's admin.token "
              "is readable")


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"meshcd: {message}", err=True)
    sys.exit(code)


def api_options(f: F) -> F:
    f = click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
                     envvar="MESHCD_DATA_DIR", default=Path(".meshcd"), show_default=True,
                     help="Where the controller keeps its state (API address, admin token).")(f)
    f = click.option("--api", "api_url", envvar="MESHCD_API",
                     help="Controller API URL (default: the address the controller recorded "
                          "in the data dir).")(f)
    f = click.option("--token", envvar="MESHCD_TOKEN",
                     help="API bearer token: viewer role to read, operator to act on "
                          "rollouts, admin for tokens (default: the data dir's admin.token).")(f)
    return f


def _error_text(raw: bytes) -> tuple[str, bool]:
    """The error message of a response body, and whether it is the API's own `{"error"}`
    (False: something else answered, e.g. the framework's 404 for an unknown route)."""
    text = raw.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:500], False
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"]), True
    if isinstance(doc, dict) and isinstance(doc.get("detail"), list):
        # FastAPI's request validation errors: [{"loc": [...], "msg": ...}, ...]
        parts = [f"{'.'.join(str(x) for x in d.get('loc', [])[1:])}: {d.get('msg', '')}"
                 if isinstance(d, dict) else str(d) for d in doc["detail"]]
        return "; ".join(parts), False
    if isinstance(doc, dict) and "detail" in doc:
        return str(doc["detail"]), False
    return text.strip()[:500], False


@dataclass
class ApiClient:
    base: str
    token: str | None
    timeout: float = 30.0
    retry_unreachable: float = 0.0  # seconds a GET keeps retrying an unreachable controller

    @classmethod
    def from_options(cls, data_dir: Path, api_url: str | None, token: str | None) -> ApiClient:
        from reconciler.controller.datadir import read_address, read_admin_token

        if api_url is None:
            info = read_address(data_dir)
            if info is None or not info.get("api"):
                fail(f"no controller address in {data_dir} (is `meshcd serve` running with "
                     "this data dir? or give --api URL)")
            api_url = str(info["api"])
        if token is None:
            try:
                token = read_admin_token(data_dir)
            except (OSError, ValueError):
                token = None
        return cls(api_url.rstrip("/"), token)

    def _auth_failure(self, method: str, path: str, code: int, detail: str) -> NoReturn:
        need = "a viewer token" if method == "GET" else "an operator (or admin) token"
        if code == 401:
            why = ("no token was sent" if not self.token
                   else "the token was not accepted (revoked, mistyped, or another controller's)")
            fail(f"{method} {path}: 401 {detail}: this needs {need} and {why}; {TOKEN_HINT}")
        fail(f"{method} {path}: 403 {detail} (the token's role is too small: give {need} "
             "with --token or MESHCD_TOKEN)")

    def call(self, method: str, path: str, body: Any = None, *,
             raw: bool = False) -> tuple[int, Any]:
        """One request. Returns (status, JSON body) for 2xx and for the API's own 4xx
        refusals (4xx but 401/403, as `{"error": ...}`); exits 2 with a clear message when the
        controller cannot be reached, refuses the token, fails (5xx) or has no such route.
        With `retry_unreachable` > 0 a GET that cannot reach the controller (or gets 502-504)
        is retried every second for that long first (a watcher outlives a restart)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        give_up: float | None = None
        while True:
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    status, payload = resp.status, resp.read()
                break
            except urllib.error.HTTPError as exc:
                detail, ours = _error_text(exc.read())
                if exc.code in (401, 403):
                    self._auth_failure(method, path, exc.code, detail)
                if exc.code >= 500:
                    problem = f"{method} {path}: {exc.code} {detail}"
                    if exc.code in (502, 503, 504) and self._retry(method, problem, give_up):
                        give_up = give_up or time.monotonic() + self.retry_unreachable
                        continue
                    fail(problem)
                if not ours and exc.code in (404, 405):
                    fail(f"{method} {path}: {exc.code} {detail} (no such endpoint: is the "
                         "controller older than this CLI?)")
                return exc.code, {"error": detail}
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                problem = (f"the controller is not running or not reachable at {self.base} "
                           f"({reason})")
                if self._retry(method, problem, give_up):
                    give_up = give_up or time.monotonic() + self.retry_unreachable
                    continue
                fail(problem)
        if raw:
            return status, payload
        try:
            return status, json.loads(payload)
        except ValueError:
            fail(f"{method} {path}: the answer is not JSON: {payload[:200]!r}")

    def _retry(self, method: str, problem: str, give_up: float | None) -> bool:
        """Wait a second and say so (once per outage) if this failure is to be retried."""
        if method != "GET" or self.retry_unreachable <= 0:
            return False
        if give_up is None:
            click.echo(f"meshcd: {problem}; retrying for up to {self.retry_unreachable:g}s",
                       err=True)
        elif time.monotonic() >= give_up:
            return False
        time.sleep(1.0)
        return True

    def _request(self, method: str, path: str, body: Any = None, *,
                 admin: bool = False, raw: bool = False) -> Any:
        if admin and not self.token:
            fail(f"this needs an API token: {TOKEN_HINT}")
        status, doc = self.call(method, path, body, raw=raw)
        if status >= 400:
            fail(f"{method} {path}: {status} {doc['error']}", 1)
        return doc

    def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        suffix = ("?" + urllib.parse.urlencode(query)) if query else ""
        return self._request("GET", path + suffix)

    def get_raw(self, path: str) -> bytes:
        result: bytes = self._request("GET", path, raw=True)
        return result

    def post(self, path: str, body: Any = None) -> Any:
        return self._request("POST", path, body if body is not None else {}, admin=True)
