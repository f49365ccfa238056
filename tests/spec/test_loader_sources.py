"""Sources: a directory and a Git tree yield the same files the same way; symlinks, paths
outside the root, oversized files and submodules are handled without reading what must not
be read."""

from __future__ import annotations

import os
from pathlib import Path

import pygit2
import pytest

from reconciler.language.findings import Finding
from reconciler.language.loader import LoadLimits
from reconciler.language.sources import (
    ConfigReadError,
    DirectorySource,
    SourceFile,
    blob_id,
)
from reconciler.language.validate import ValidationCache, validate
from reconciler.source.tree import GitTreeSource

SERVICE = b"""apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  ports: [{name: http, number: 8080}]
"""


def split(items: list[SourceFile | Finding]) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    files = {i.path: i.data for i in items if isinstance(i, SourceFile)}
    found = [(i.code, i.location.file) for i in items if isinstance(i, Finding)]
    return files, found


def commit_tree(repo: pygit2.Repository, entries: dict[str, tuple[bytes, int]]) -> str:
    """Commit a tree built from {path: (content, filemode)}; content of a gitlink is an oid."""

    def build(prefix: str) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        children: set[str] = set()
        for path, (content, mode) in entries.items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest:
                children.add(rest.split("/", 1)[0])
            elif mode == pygit2.GIT_FILEMODE_COMMIT:
                tb.insert(rest, pygit2.Oid(hex=content.decode()), mode)
            else:
                tb.insert(rest, repo.create_blob(content), mode)
        for child in sorted(children):
            tb.insert(child, build(prefix + child + "/"), pygit2.GIT_FILEMODE_TREE)
        return tb.write()

    sig = pygit2.Signature("t", "t@example.com", 0, 0)
    oid = repo.create_commit("refs/heads/main", sig, sig, "c", build(""), [])
    return str(oid)


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path / "repo.git"), bare=True)


BLOB = pygit2.GIT_FILEMODE_BLOB


# --- directory ------------------------------------------------------------------------------


def test_directory_reads_yaml_only_sorted_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_bytes(b"b: 1\n")
    (tmp_path / "a.yml").write_bytes(b"a: 1\n")
    (tmp_path / "notes.txt").write_bytes(b"x")
    (tmp_path / ".hidden.yaml").write_bytes(b"h: 1\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_bytes(b"x: 1\n")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "c.yaml").write_bytes(b"c: 1\n")
    items = list(DirectorySource(tmp_path).files())
    files, found = split(items)
    assert list(files) == ["a.yml", "b.yaml", "sub/deeper/c.yaml"]
    assert found == []
    sf = next(i for i in items if isinstance(i, SourceFile) and i.path == "a.yml")
    assert sf.key == blob_id(b"a: 1\n") == str(pygit2.hash(b"a: 1\n"))


def test_directory_symlinks_are_findings_and_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.yaml"
    outside.write_bytes(b"secret: 1\n")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "x.yaml").write_bytes(b"x: 1\n")
    (root / "ok.yaml").write_bytes(b"a: 1\n")
    os.symlink(outside, root / "link.yaml")
    os.symlink(tmp_path / "outdir", root / "dirlink")
    os.symlink(root / "ok.yaml", root / "inside-link.yaml")  # even one pointing inside
    os.symlink(root / "nowhere", root / "dangling.txt")
    files, found = split(list(DirectorySource(root).files()))
    assert list(files) == ["ok.yaml"]
    assert sorted(found) == [
        ("MCD007", "dangling.txt"), ("MCD007", "dirlink"), ("MCD007", "inside-link.yaml"),
        ("MCD007", "link.yaml"),
    ]


def test_directory_size_limit_is_checked_before_reading(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_bytes(b"a: " + b"x" * 200 + b"\n")
    (tmp_path / "small.yaml").write_bytes(b"a: 1\n")
    files, found = split(list(DirectorySource(tmp_path).files(max_file_size=100)))
    assert list(files) == ["small.yaml"]
    assert found == [("MCD006", "big.yaml")]


def test_directory_root_itself_may_be_reached_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.yaml").write_bytes(b"a: 1\n")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    files, found = split(list(DirectorySource(tmp_path / "alias").files()))
    assert list(files) == ["a.yaml"] and found == []


def test_directory_file_swapped_to_outside_root_is_refused(tmp_path: Path) -> None:
    """A parent directory replaced by a symlink between listing and reading must not let the
    reader leave the root: the opened file's real path is checked (MCD009)."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.yaml").write_bytes(b"a: 1\n")
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "a.yaml").write_bytes(b"evil: 1\n")
    src = DirectorySource(root)
    real_root = os.path.realpath(root)
    os.rename(root / "d", tmp_path / "d-moved")
    os.symlink(tmp_path / "evil", root / "d")
    result = src._read(real_root, "d/a.yaml", str(root / "d" / "a.yaml"), 1000)
    assert isinstance(result, Finding)
    assert result.code == "MCD009"


def test_missing_or_non_directory_root_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigReadError):
        list(DirectorySource(tmp_path / "nope").files())
    (tmp_path / "f.yaml").write_bytes(b"a: 1\n")
    with pytest.raises(ConfigReadError):
        list(DirectorySource(tmp_path / "f.yaml").files())


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_is_a_finding(tmp_path: Path) -> None:  # pragma: no cover - as root
    p = tmp_path / "a.yaml"
    p.write_bytes(b"a: 1\n")
    p.chmod(0)
    _, found = split(list(DirectorySource(tmp_path).files()))
    assert found == [("MCD009", "a.yaml")]


# --- git tree -------------------------------------------------------------------------------


def test_git_tree_reads_blobs_without_checkout(repo: pygit2.Repository) -> None:
    commit_tree(repo, {
        "services/cart.yaml": (SERVICE, BLOB),
        "run.yml": (b"a: 1\n", pygit2.GIT_FILEMODE_BLOB_EXECUTABLE),
        "README.md": (b"# hi\n", BLOB),
        ".hidden/x.yaml": (b"x: 1\n", BLOB),
    })
    items = list(GitTreeSource(repo, "main").files())
    files, found = split(items)
    assert files == {"run.yml": b"a: 1\n", "services/cart.yaml": SERVICE}
    assert found == []
    keys = {i.path: i.key for i in items if isinstance(i, SourceFile)}
    assert keys["run.yml"] == blob_id(b"a: 1\n")


def test_git_symlinks_are_findings_and_submodules_ignored(repo: pygit2.Repository) -> None:
    commit_tree(repo, {
        "ok.yaml": (b"a: 1\n", BLOB),
        "link.yaml": (b"../../etc/passwd", pygit2.GIT_FILEMODE_LINK),
        "vendor": (b"1a" * 20, pygit2.GIT_FILEMODE_COMMIT),
    })
    files, found = split(list(GitTreeSource(repo, "main").files()))
    assert list(files) == ["ok.yaml"]
    assert found == [("MCD007", "link.yaml")]


def test_git_size_limit_reads_only_the_header(repo: pygit2.Repository) -> None:
    commit_tree(repo, {"big.yaml": (b"a: " + b"x" * 5000 + b"\n", BLOB), "s.yaml": (b"a: 1\n", BLOB)})
    reads: list[str] = []
    src = GitTreeSource(repo, "main")
    original = src._read

    def counting_read(oid: pygit2.Oid) -> bytes:
        reads.append(str(oid))
        return original(oid)

    src._read = counting_read  # type: ignore[method-assign]
    result = validate(src, options=LoadLimits(max_file_size=1000))
    assert [(f.code, f.location.file) for f in result.findings if f.code == "MCD006"] == [
        ("MCD006", "big.yaml")
    ]
    assert reads == [blob_id(b"a: 1\n")]  # the big blob's content was never read


def test_git_accepts_tags_and_trees_and_reports_bad_revs(repo: pygit2.Repository, tmp_path: Path) -> None:
    commit = commit_tree(repo, {"a.yaml": (b"a: 1\n", BLOB)})
    tree = str(repo[commit].peel(pygit2.Tree).id)
    for rev in ("main", commit, commit[:10], tree, "main^{tree}"):
        files, _ = split(list(GitTreeSource(repo, rev).files()))
        assert list(files) == ["a.yaml"], rev
    with pytest.raises(ConfigReadError, match="unknown revision"):
        GitTreeSource(repo, "no-such-branch")
    blob = str(repo.create_blob(b"x"))
    with pytest.raises(ConfigReadError, match="neither a commit nor a tree"):
        GitTreeSource(repo, blob)
    with pytest.raises(ConfigReadError, match="not a git repository"):
        GitTreeSource(str(tmp_path / "nothing"), "main")
    assert isinstance(GitTreeSource(repo.path, "main").describe(), str)


def test_directory_and_git_give_the_same_result(tmp_path: Path, repo: pygit2.Repository) -> None:
    content = {
        "mesh.yaml": b"apiVersion: meshcd.dev/v1alpha1\nkind: Mesh\nmetadata: {name: mesh}\n"
                     b"spec: {trustDomain: t.example}\n",
        "services/cart.yaml": SERVICE,
        "services/bad.yaml": b"apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: "
                             b"{name: Bad_Name}\nspec: {ports: []}\n",
    }
    root = tmp_path / "dir"
    for path, data in content.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    commit_tree(repo, {p: (d, BLOB) for p, d in content.items()})
    cache = ValidationCache()
    from_dir = validate(DirectorySource(root), cache)
    from_git = validate(GitTreeSource(repo, "main"), cache)
    assert from_dir.findings == from_git.findings
    assert from_dir.model.services == from_git.model.services
    assert cache.parsed == 3  # the same blob ids: the git run was served from the cache


@pytest.mark.parametrize(
    ("content", "code", "line"),
    [
        (b"a: 1\nb: caf\xe9\n", "MCD004", 2),
        (b"a: 1\n\x00\x01\x02", "MCD005", 2),
        (b"a: 1\na: 2\n", "MCD002", 2),
        (b"a: [\n", "MCD001", 2),
    ],
)
def test_bad_bytes_from_git_and_directory_alike(
    content: bytes, code: str, line: int, tmp_path: Path, repo: pygit2.Repository
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "bad.yaml").write_bytes(content)
    commit_tree(repo, {"bad.yaml": (content, BLOB)})
    for src in (DirectorySource(tmp_path / "d"), GitTreeSource(repo, "main")):
        result = validate(src)
        got = [(f.code, f.location.file, f.location.line) for f in result.findings if f.code < "MCD100"]
        assert got == [(code, "bad.yaml", line)], src
