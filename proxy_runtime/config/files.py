"""The only I/O of the config package: read and write snapshot files, read the schema."""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import SnapshotError
from .model import Snapshot
from .parse import parse_snapshot, snapshot_to_json


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_snapshot(text: str | bytes) -> Snapshot:
    """Parse snapshot JSON text. NaN/Infinity and duplicate keys are refused."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    try:
        obj = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=_reject_constant)
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise SnapshotError("", f"not valid JSON: {e}") from None
    return parse_snapshot(obj)


def load_snapshot_file(path: str | os.PathLike[str]) -> Snapshot:
    with open(path, "rb") as f:
        return loads_snapshot(f.read())


def dumps_snapshot(snapshot: Snapshot) -> str:
    """Readable, stable text (2-space indent, field order of the schema) for files and diffs."""
    return (
        json.dumps(snapshot_to_json(snapshot), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )


def dump_snapshot_file(snapshot: Snapshot, path: str | os.PathLike[str]) -> None:
    """Write atomically: temp file in the same directory, fsync, rename, fsync the directory."""
    # os.path rather than pathlib/importlib.resources: this module is imported by every proxy,
    # and those pull in megabytes of modules the proxy never uses otherwise.
    target = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    data = dumps_snapshot(snapshot).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def snapshot_schema() -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of a snapshot, shipped as snapshot.schema.json."""
    with open(os.path.join(os.path.dirname(__file__), "snapshot.schema.json"), "rb") as f:
        schema: dict[str, Any] = json.loads(f.read())
    return schema
