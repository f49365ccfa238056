"""A config source read from a Git tree at a commit, straight from the object database (no
checkout). It yields what `reconciler.language.sources.DirectorySource` yields for the same files,
in the same order, so `reconciler.language.validate` takes either."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from typing import Any

import pygit2

from reconciler.language.codes import finding
from reconciler.language.findings import Finding, Location
from reconciler.language.sources import (
    DEFAULT_MAX_FILE_SIZE,
    YAML_SUFFIXES,
    ConfigReadError,
    SourceFile,
)

_GIT_TREE = 0o040000
_GIT_LINK = 0o120000
_GIT_SUBMODULE = 0o160000


class GitTreeSource:
    """Every non-hidden *.yaml / *.yml in the tree of `rev`, read from the object database.

    Symlink entries are reported (MCD007), submodules are ignored. Files are yielded lazily
    (see SourceFile); the size limit is checked by the pipeline from the blob's header before
    its content is read.
    """

    def __init__(self, repo: Any, rev: str = "HEAD", subdir: str = "") -> None:
        """`repo`: a pygit2.Repository or a path; `rev`: anything `git rev-parse` takes that
        names a commit or a tree; `subdir`: the config root inside the tree (file paths in
        findings are relative to it, as for a DirectorySource of that folder)."""
        if isinstance(repo, (str, os.PathLike)):
            try:
                repo = pygit2.Repository(os.fspath(repo))
            except (pygit2.GitError, KeyError, OSError) as e:
                raise ConfigReadError(f"not a git repository: {os.fspath(repo)}") from e
        self.repo = repo
        self.rev = rev
        try:
            obj = repo.revparse_single(rev)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError) as e:
            raise ConfigReadError(f"unknown revision {rev!r} in {repo.path}") from e
        # A commit, a tag, or a bare tree (`git write-tree` gives the staged tree: pre-commit).
        self.commit_id: str | None = None
        try:
            commit = obj.peel(pygit2.Commit)
            self.commit_id = str(commit.id)
            self.tree = commit.tree
        except (ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            try:
                self.tree = obj.peel(pygit2.Tree)
            except (ValueError, pygit2.GitError, pygit2.InvalidSpecError) as e:
                raise ConfigReadError(f"{rev!r} names neither a commit nor a tree") from e
        parts = [p for p in subdir.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ConfigReadError(f"{subdir!r} leaves the repository")
        self.subdir = "/".join(parts)
        if self.subdir:
            try:
                entry = self.tree[self.subdir]
            except KeyError as e:
                raise ConfigReadError(f"no directory {self.subdir!r} in {rev!r}") from e
            if entry.filemode != _GIT_TREE:
                raise ConfigReadError(f"{self.subdir!r} is not a directory in {rev!r}")
            self.tree = repo[entry.id]

    def describe(self) -> str:
        oid = self.commit_id or str(self.tree.id)
        where = f"{self.rev} ({oid[:12]})" if not oid.startswith(self.rev) else oid[:12]
        return f"{where}:{self.subdir}" if self.subdir else where

    def files(self, max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> Iterator[SourceFile | Finding]:
        yield from self._walk(self.tree, "", max_file_size)

    def _walk(self, tree: Any, rel: str, limit: int) -> Iterator[SourceFile | Finding]:
        for entry in sorted(tree, key=lambda e: e.name):
            name: str = entry.name
            if name.startswith("."):
                continue
            path = f"{rel}/{name}" if rel else name
            if "/" in name or "\\" in name or "\x00" in name:
                yield finding("MCD009", f"tree entry name {name!r} is not a plain file name", Location(path))
                continue
            mode = entry.filemode
            if mode == _GIT_SUBMODULE:
                continue
            if mode == _GIT_LINK:
                yield finding("MCD007", "symlink in the config tree; not followed", Location(path))
                continue
            if mode == _GIT_TREE:
                yield from self._walk(self.repo[entry.id], path, limit)
                continue
            if not name.endswith(YAML_SUFFIXES):
                continue
            oid = entry.id
            # Neither size nor content is read here: a cache hit on the blob id needs neither,
            # and the pipeline checks the size (from the object header) before the content.
            yield SourceFile(
                path, str(oid), reader=partial(self._read, oid), size=partial(self._size, oid)
            )

    def _read(self, oid: Any) -> bytes:
        return bytes(self.repo[oid].data)

    def _size(self, oid: Any) -> int:
        try:
            return int(self.repo.odb.read_header(oid)[1])
        except KeyError:  # e.g. packed by a concurrent gc: let the repo look again
            return int(self.repo[oid].size)
