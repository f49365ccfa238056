"""Files the controller keeps in its data dir for the CLI: the admin bearer token (0600,
written on the first start) and `controller.json` (where the running controller listens)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

TOKEN_FILE = "admin.token"
ADDRESS_FILE = "controller.json"
TOKEN_PREFIX = "mca_"


def token_id(token: str) -> str:
    """The short id the audit names a token by (never the secret)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


def ensure_admin_token(data_dir: Path) -> str:
    """The admin token; created 0600 on the first start (O_EXCL: concurrent starts agree)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / TOKEN_FILE
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_admin_token(data_dir)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    return token


def read_admin_token(data_dir: Path) -> str:
    text = (data_dir / TOKEN_FILE).read_text("ascii").strip()
    if not text:
        raise ValueError(f"{data_dir / TOKEN_FILE} is empty")
    return text


def token_matches(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def write_address(data_dir: Path, info: dict[str, Any]) -> None:
    """Atomically replace controller.json (0600)."""
    path = data_dir / ADDRESS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_address(data_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((data_dir / ADDRESS_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
