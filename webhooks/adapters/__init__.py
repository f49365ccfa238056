"""One pure adapter per forge: `(headers, raw body, secret) -> Push | Ping | Ignored`, or a
`Rejection`.

`ADAPTERS` maps the `{forge}` path segment of `POST /webhooks/{forge}` to its adapter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from webhooks.adapters import bitbucket, generic, github, gitlab
from webhooks.adapters._common import HeaderSource
from webhooks.adapters.gitea import parse_forgejo, parse_gitea
from webhooks.model import Ignored, Ping, Push

Adapter: TypeAlias = Callable[[HeaderSource, bytes, bytes], Push | Ping | Ignored]

ADAPTERS: dict[str, Adapter] = {
    "github": github.parse,
    "gitlab": gitlab.parse,
    "gitea": parse_gitea,
    "forgejo": parse_forgejo,
    "bitbucket": bitbucket.parse,
    "generic": generic.parse,
}

FORGES: tuple[str, ...] = tuple(ADAPTERS)

__all__ = ["ADAPTERS", "FORGES", "Adapter", "HeaderSource"]
