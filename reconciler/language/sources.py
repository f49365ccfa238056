"""Where config files come from: a directory here, or a Git tree at a commit (no checkout:
`reconciler.source.tree.GitTreeSource`, where the git code lives; the config language imports
none).

Both yield the same things in the same (sorted path) order: a `SourceFile` per YAML file to
parse, or a `Finding` for a file that must not be read (symlink, outside the root, too big).
`SourceFile.key` is the Git blob id of the content in both cases (for a directory it is
computed the way Git does), so a cache filled from one kind of source serves the other.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from reconciler.errors import ConfigError
from reconciler.language.codes import finding
from reconciler.language.findings import Finding, Location

DEFAULT_MAX_FILE_SIZE = 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")


class SourceFile:
    """One config file: its repo-relative "/"-separated path, its Git blob id (the cache
    key), and its content, read only when first asked for (a cache hit never reads it)."""

    __slots__ = ("_data", "_reader", "_size", "key", "path")

    def __init__(
        self,
        path: str,
        key: str,
        data: bytes | None = None,
        *,
        reader: Callable[[], bytes] | None = None,
        size: Callable[[], int] | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self._data = data
        self._reader = reader
        self._size = size

    @property
    def data(self) -> bytes:
        if self._data is None:
            assert self._reader is not None
            self._data = self._reader()
        return self._data

    @property
    def size(self) -> int:
        """Size in bytes, without reading the content when the source can tell."""
        if self._data is None and self._size is not None:
            return self._size()
        return len(self.data)

    def __repr__(self) -> str:
        return f"SourceFile({self.path!r}, {self.key[:12]})"


class ConfigReadError(ConfigError):
    """The config source as a whole cannot be read (missing directory, bad repo, unknown rev).

    Not `reconciler.source.SourceError`: that one is about talking to the remote repo."""


class Source(Protocol):
    def files(self, max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> Iterator[SourceFile | Finding]:
        ...

    def describe(self) -> str:
        ...


def blob_id(data: bytes) -> str:
    """The Git blob id of `data`."""
    h = hashlib.sha1(b"blob %d\x00" % len(data), usedforsecurity=False)
    h.update(data)
    return h.hexdigest()


def is_config_name(name: str) -> bool:
    return not name.startswith(".") and name.endswith(YAML_SUFFIXES)


def _too_big(path: str, size: int, limit: int) -> Finding:
    return finding(
        "MCD006", f"file is {size} bytes, more than the limit of {limit} bytes; not read", Location(path)
    )


class DirectorySource:
    """Every non-hidden *.yaml / *.yml under `root`. Symlinks are reported, never followed."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def files(self, max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> Iterator[SourceFile | Finding]:
        try:
            st = os.stat(self.root)
        except OSError as e:
            raise ConfigReadError(f"cannot read {self.root}: {e.strerror or e}") from e
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigReadError(f"{self.root} is not a directory")
        real_root = os.path.realpath(self.root)
        yield from self._walk(real_root, "", max_file_size)

    def _walk(self, real_root: str, rel: str, limit: int) -> Iterator[SourceFile | Finding]:
        here = os.path.join(real_root, rel) if rel else real_root
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield finding("MCD009", f"cannot list directory: {e.strerror or e}", Location(rel or "."))
            return
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            path = f"{rel}/{name}" if rel else name
            try:
                if entry.is_symlink():
                    target = _readlink(entry.path)
                    yield finding(
                        "MCD007", f"symlink (to {target!r}) in the config tree; not followed", Location(path)
                    )
                    continue
                if entry.is_dir(follow_symlinks=False):
                    yield from self._walk(real_root, path, limit)
                    continue
                if not entry.is_file(follow_symlinks=False) or not name.endswith(YAML_SUFFIXES):
                    continue
                size = entry.stat(follow_symlinks=False).st_size
            except OSError as e:
                yield finding("MCD009", f"cannot read: {e.strerror or e}", Location(path))
                continue
            if size > limit:
                yield _too_big(path, size, limit)
                continue
            yield self._read(real_root, path, entry.path, limit)

    def _read(self, real_root: str, path: str, full: str, limit: int) -> SourceFile | Finding:
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError as e:
            if os.path.islink(full):  # swapped for a symlink since the listing
                return finding("MCD007", "symlink in the config tree; not followed", Location(path))
            return finding("MCD009", f"cannot read: {e.strerror or e}", Location(path))
        try:
            # Check where the open file really is: a parent directory swapped for a symlink
            # after the listing must not let us read outside the root.
            real = _fd_path(fd) or os.path.realpath(full)
            if os.path.commonpath([real_root, real]) != real_root:
                return finding("MCD009", f"resolves outside the root (to {real})", Location(path))
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return finding("MCD009", "not a regular file", Location(path))
            chunks: list[bytes] = []
            got = 0
            while got <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except OSError as e:
            return finding("MCD009", f"cannot read: {e.strerror or e}", Location(path))
        finally:
            os.close(fd)
        if got > limit:  # grew since the listing
            return _too_big(path, got, limit)
        data = b"".join(chunks)
        return SourceFile(path, blob_id(data), data)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
