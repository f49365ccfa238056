"""How the CLI reaches a running controller: the API URL and admin token from the data dir
(or --api / MESHCD_API and --token / MESHCD_TOKEN), stdlib HTTP, clear errors (exit 2)."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


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
                     help="Admin bearer token (default: read from the data dir).")(f)
    return f


@dataclass
class ApiClient:
    base: str
    token: str | None
    timeout: float = 30.0

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

    def _request(self, method: str, path: str, body: Any = None, *,
                 admin: bool = False, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if admin:
            if not self.token:
                fail("this needs the admin token: give --token, set MESHCD_TOKEN, or run "
                     "where the data dir's admin.token is readable")
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                detail = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                detail = text
            fail(f"{method} {path}: {exc.code} {detail}", 1 if exc.code < 500 else 2)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            fail(f"the controller is not running or not reachable at {self.base} ({reason})")
        if raw:
            return payload
        return json.loads(payload)

    def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        suffix = ("?" + urllib.parse.urlencode(query)) if query else ""
        return self._request("GET", path + suffix)

    def get_raw(self, path: str) -> bytes:
        result: bytes = self._request("GET", path, raw=True)
        return result

    def post(self, path: str, body: Any = None) -> Any:
        return self._request("POST", path, body if body is not None else {}, admin=True)
