"""The bad-input corpus: every broken repo yields exactly the expected findings, at the expected
places, from a directory and from a git commit of it; no exception escapes; nothing outside
the root is read.

tests/corpus/<case>/ holds the YAML of one broken repo, an `expected.txt` with one line per
finding (`file:line:col CODE`, `file:line CODE` or `file CODE`; `#` starts a comment) and,
optionally, `options.json` with LoadLimits overrides. Cases that git cannot hold as files
(symlinks, huge files, non-UTF-8 or NUL bytes, a directory symlinked out of the root) are
built here in tmp_path, as directories and as git trees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.language.findings import Finding
from reconciler.language.loader import LoadLimits
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import ValidationResult, validate
from reconciler.source.tree import GitTreeSource

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
REPO = Path(__file__).resolve().parents[2]
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
ALL_CODES = {f"MCD{n:03d}" for n in (*range(1, 17), 20, *range(100, 133))}

# --- recording every path the process opens or lists while a validation runs ---------------

_RECORDING: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _RECORDING and event in ("open", "os.scandir", "os.listdir", "os.readlink") and args:
        path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)):
            _RECORDING[-1].append(os.fsdecode(path))


sys.addaudithook(_audit)


def run(source: Any, limits: LoadLimits | None = None) -> tuple[ValidationResult, list[str]]:
    _RECORDING.append([])
    try:
        result = validate(source, options=limits)
    finally:
        touched = _RECORDING.pop()
    return result, touched


# --- expected.txt ---------------------------------------------------------------------------


def parse_expected(text: str) -> list[tuple[str, int | None, int | None, str]]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where, code = line.rsplit(" ", 1)
        parts = where.split(":")
        file = parts[0]
        ln = int(parts[1]) if len(parts) > 1 else None
        col = int(parts[2]) if len(parts) > 2 else None
        out.append((file, ln, col, code))
    return out


def _matches(f: Finding, e: tuple[str, int | None, int | None, str]) -> bool:
    file, ln, col, code = e
    loc = f.location
    return (
        f.code == code
        and loc.file == file
        and (ln is None or loc.line == ln)
        and (col is None or loc.column == col)
    )


def assert_findings(findings: tuple[Finding, ...], expected: list[Any], case: str) -> None:
    missing = [e for e in expected if not any(_matches(f, e) for f in findings)]
    unexpected = [f for f in findings if not any(_matches(f, e) for e in expected)]
    assert not missing and not unexpected, (
        f"{case}: missing {missing}; unexpected {[str(f) for f in unexpected]}"
    )


def limits_for(case_dir: Path) -> LoadLimits | None:
    opts = case_dir / "options.json"
    return LoadLimits(**json.loads(opts.read_text())) if opts.exists() else None


def commit_dir(src: Path, repo_dir: Path) -> pygit2.Repository:
    """A bare repo whose HEAD commit holds `src`'s files (regular files only)."""
    repo = pygit2.init_repository(str(repo_dir), bare=True)

    def tree_of(d: Path) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        for p in sorted(d.iterdir()):
            if p.is_dir():
                tb.insert(p.name, tree_of(p), pygit2.GIT_FILEMODE_TREE)
            else:
                tb.insert(p.name, repo.create_blob(p.read_bytes()), pygit2.GIT_FILEMODE_BLOB)
        return tb.write()

    sig = pygit2.Signature("corpus", "corpus@example.invalid", 1_700_000_000, 0)
    repo.create_commit("HEAD", sig, sig, "corpus case", tree_of(src), [])
    return repo


def _outside(touched: list[str], root: Path) -> list[str]:
    real_root = os.path.realpath(root)
    return [
        p for p in touched
        if not os.path.realpath(p).startswith(real_root) and not p.startswith("/proc/self/fd")
        and "site-packages" not in p and not p.startswith(sys.prefix)
        and not p.startswith(str(REPO))
    ]


# --- the static corpus ----------------------------------------------------------------------


def test_corpus_is_big_enough_and_covers_every_code() -> None:
    assert len(CASES) >= 40
    seen = set()
    for case in CASES:
        seen |= {e[3] for e in parse_expected((CORPUS / case / "expected.txt").read_text())}
    # MCD004-007 and MCD009 are built in this module (git cannot hold them as plain files).
    generated = {"MCD004", "MCD005", "MCD007", "MCD009"}
    assert ALL_CODES - generated <= seen, sorted(ALL_CODES - generated - seen)


@pytest.mark.parametrize("case", CASES)
def test_corpus_case_from_directory(case: str) -> None:
    case_dir = CORPUS / case
    expected = parse_expected((case_dir / "expected.txt").read_text())
    assert expected, f"{case}: expected.txt lists nothing"
    result, touched = run(DirectorySource(case_dir), limits_for(case_dir))
    assert_findings(result.findings, expected, case)
    assert not _outside(touched, case_dir)


@pytest.mark.parametrize("case", CASES)
def test_corpus_case_from_git_tree(case: str, tmp_path: Path) -> None:
    case_dir = CORPUS / case
    expected = parse_expected((case_dir / "expected.txt").read_text())
    repo = commit_dir(case_dir, tmp_path / "repo.git")
    result, _ = run(GitTreeSource(repo, "HEAD"), limits_for(case_dir))
    assert_findings(result.findings, expected, case)


CLI_CASES = ["weights-not-100", "yaml-duplicate-key", "retry-post", "schema-unknown-field"]


def _meshcd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from reconciler.cli.main import main; main()", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )


@pytest.mark.parametrize("case", CLI_CASES)
def test_corpus_case_through_cli(case: str) -> None:
    case_dir = CORPUS / case
    expected = parse_expected((case_dir / "expected.txt").read_text())
    proc = _meshcd("validate", str(case_dir))
    assert "Traceback" not in proc.stderr
    severities = set()
    for file, ln, col, code in expected:
        prefix = f"{file}:{ln}:{col}: "
        hits = [line for line in proc.stdout.splitlines() if prefix in line and f" {code}: " in line]
        assert hits, f"{case}: no line for {prefix}{code} in:\n{proc.stdout}"
        severities.add(hits[0][hits[0].index(prefix) + len(prefix):].split(" ", 1)[0])
    assert proc.returncode == (1 if "error" in severities else 0), proc.stdout + proc.stderr
    if "error" not in severities:
        assert _meshcd("validate", "--strict", str(case_dir)).returncode == 1


# --- generated cases: what git cannot hold as plain files -----------------------------------

MESH = b"apiVersion: meshcd.dev/v1alpha1\nkind: Mesh\nmetadata: {name: mesh}\nspec: {trustDomain: corp.example}\n"
SERVICE = (
    b"apiVersion: meshcd.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\n"
    b"spec: {ports: [{name: http, number: 80}]}\n"
)


def _codes_at(result: ValidationResult) -> set[tuple[str, str]]:
    return {(f.location.file, f.code) for f in result.findings}


def _bad_bytes_cases() -> Iterator[tuple[str, bytes, str]]:
    yield "latin1.yaml", SERVICE.replace(b"web", b"caf\xe9"), "MCD004"
    yield "nul.yaml", SERVICE + b"# \x00\x00\x00\n", "MCD005"
    yield "huge.yaml", SERVICE + b"#" + b"x" * (2 * 1024 * 1024) + b"\n", "MCD006"


@pytest.mark.parametrize(
    "name,data,code", list(_bad_bytes_cases()), ids=["non-utf8", "nul-bytes", "2MiB"]
)
def test_bad_bytes_from_directory_and_git(tmp_path: Path, name: str, data: bytes, code: str) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "mesh.yaml").write_bytes(MESH)
    (root / name).write_bytes(data)
    result, touched = run(DirectorySource(root))
    assert (name, code) in _codes_at(result)
    assert {f.code for f in result.findings} == {code}
    assert not result.model.services  # nothing of the bad file got in
    assert not _outside(touched, root)

    repo = commit_dir(root, tmp_path / "repo.git")
    result, _ = run(GitTreeSource(repo, "HEAD"))
    assert {f.code for f in result.findings} == {code}
    assert (name, code) in _codes_at(result)


def test_symlinks_are_reported_and_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_bytes(SERVICE.replace(b"web", b"secret"))
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / "mesh.yaml").write_bytes(MESH)
    (root / "svc.yaml").write_bytes(SERVICE)
    (root / "link.yaml").symlink_to(root / "svc.yaml")  # a file symlink inside the root
    (root / "escape.yaml").symlink_to(outside / "secret.yaml")  # a file symlink out of it
    (root / "sub" / "up").symlink_to(outside, target_is_directory=True)  # a dir symlink out of it

    result, touched = run(DirectorySource(root))
    assert _codes_at(result) == {
        ("link.yaml", "MCD007"), ("escape.yaml", "MCD007"), ("sub/up", "MCD007")
    }
    assert [s.name for s in result.model.services] == ["web"]
    # Listing and reading the links themselves is fine; nothing under `outside` is opened.
    assert not any(p.startswith(str(outside)) for p in touched), touched
    assert not _outside([p for p in touched if not os.path.islink(p)], root)
    assert not any("secret" in r.name for r in result.model.resources())


def test_root_reached_through_a_symlink_is_fine(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "mesh.yaml").write_bytes(MESH)
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    result, _ = run(DirectorySource(tmp_path / "alias"))
    assert result.findings == ()


def test_git_tree_symlink_and_hostile_names(tmp_path: Path) -> None:
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True)
    tb = repo.TreeBuilder()
    tb.insert("mesh.yaml", repo.create_blob(MESH), pygit2.GIT_FILEMODE_BLOB)
    tb.insert("svc.yaml", repo.create_blob(SERVICE), pygit2.GIT_FILEMODE_BLOB)
    tb.insert("link.yaml", repo.create_blob(b"../../etc/passwd"), pygit2.GIT_FILEMODE_LINK)
    # A name a checkout on Windows would turn into a path (git itself refuses "/" and "..").
    tb.insert("x\\..\\evil.yaml", repo.create_blob(SERVICE), pygit2.GIT_FILEMODE_BLOB)
    sub = repo.TreeBuilder()
    sub.insert("up", repo.create_blob(b"/etc"), pygit2.GIT_FILEMODE_LINK)
    tb.insert("sub", sub.write(), pygit2.GIT_FILEMODE_TREE)
    sig = pygit2.Signature("t", "t@example.invalid", 1_700_000_000, 0)
    repo.create_commit("HEAD", sig, sig, "links", tb.write(), [])
    result, touched = run(GitTreeSource(repo, "HEAD"))
    assert _codes_at(result) == {
        ("link.yaml", "MCD007"), ("sub/up", "MCD007"), ("x\\..\\evil.yaml", "MCD009")
    }
    assert [s.name for s in result.model.services] == ["web"]
    assert not any(p.startswith("/etc") for p in touched)


def test_directory_swapped_for_outside_symlink_is_outside_root(tmp_path: Path) -> None:
    """The reader checks where an opened file really is: a path that resolves out of the root
    (a parent directory swapped for a symlink between listing and reading) is refused with
    MCD009. The swap itself is a race; here the reader is handed such a path directly."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "svc.yaml").write_bytes(SERVICE)
    root = tmp_path / "repo"
    root.mkdir()
    (root / "mesh.yaml").write_bytes(MESH)
    src = DirectorySource(root)
    # Read a file through the source's own reader, as if the listing had named a path that
    # now resolves out of the root (the race the reader guards against).
    got = src._read(os.path.realpath(root), "svc.yaml", str(outside / "svc.yaml"), 1 << 20)
    assert isinstance(got, Finding) and got.code == "MCD009"


def test_too_many_documents_in_the_repo(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a-mesh.yaml").write_bytes(MESH)
    for i in range(3):
        (root / f"s{i}.yaml").write_bytes(SERVICE.replace(b"web", f"s{i}".encode()))
    result, _ = run(DirectorySource(root), LoadLimits(max_documents_per_repo=2))
    assert ("s1.yaml", "MCD008") in _codes_at(result)
    assert len(result.model.services) == 1  # a-mesh + s0 loaded, the rest not


def test_every_corpus_file_is_valid_utf8_yaml_or_expected_text() -> None:
    for p in CORPUS.rglob("*"):
        if p.is_file():
            p.read_bytes().decode("utf-8")  # the corpus itself stays plain text in git
            assert not p.is_symlink()


# --- mutations of the example: whatever a typo does, validation reports, never raises -------

EXAMPLE = REPO / "repo_layout_example"


class _Files:
    """A repo in memory (path -> bytes), read like a directory."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.data = files

    def describe(self) -> str:
        return "mutated example"

    def files(self, max_file_size: int = 1 << 20) -> Iterator[Any]:
        from reconciler.language.sources import SourceFile, blob_id

        for path in sorted(self.data):
            yield SourceFile(path, blob_id(self.data[path]), self.data[path])


def _mutate(rng: Any, text: str) -> str:
    lines = text.splitlines(keepends=True)
    if not lines:
        return text
    i = rng.randrange(len(lines))
    op = rng.randrange(7)
    if op == 0:
        del lines[i]  # a lost line
    elif op == 1:
        lines.insert(i, lines[i])  # a duplicated line (duplicate keys, duplicate entries)
    elif op == 2:
        lines[i] = " " + lines[i]  # an indentation slip
    elif op == 3:  # a number changed
        lines[i] = "".join(str(rng.randrange(-5, 300)) if c.isdigit() else c for c in lines[i])
    elif op == 4:  # a name changed (dangling references, non-DNS names)
        words = ["cart", "v3", "Cart_Svc", "", "*", "shop.nowhere", "10.0.0.0/33", "[::1]:x"]
        lines[i] = lines[i].replace(rng.choice(["cart", "catalog", "v1", "v2", "shop", "8080"]), rng.choice(words))
    elif op == 5:
        lines = lines[:i]  # a truncated file
    else:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]  # two lines swapped
    return "".join(lines)


def test_mutated_example_never_raises() -> None:
    import random

    from reconciler.language.validate import ValidationCache

    rng = random.Random(2)
    base = {
        str(p.relative_to(EXAMPLE)): p.read_bytes()
        for p in sorted(EXAMPLE.rglob("*.yaml"))
    }
    cache = ValidationCache()
    codes: set[str] = set()
    for _ in range(150):
        files = dict(base)
        for _k in range(rng.randrange(1, 4)):
            path = rng.choice(sorted(files))
            files[path] = _mutate(rng, files[path].decode()).encode()
        result = validate(_Files(files), cache=cache)  # must not raise
        for f in result.findings:
            assert f.location.file in files or f.location.file == "."
            codes.add(f.code)
    # The mutations reach both the loader/schema and the semantic checks.
    assert any(c < "MCD100" for c in codes) and any(c >= "MCD100" for c in codes), codes
