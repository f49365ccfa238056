"""Real Git repos for plan tests: commit a dict of files (path -> text) with pygit2."""

from __future__ import annotations

from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "repo_layout_example"
SIG = pygit2.Signature("meshcd tests", "tests@example.invalid", 1_700_000_000, 0)


def example_files() -> dict[str, str]:
    return {
        str(p.relative_to(EXAMPLE)): p.read_text()
        for p in sorted(EXAMPLE.rglob("*"))
        if p.is_file() and p.suffix in (".yaml", ".yml", ".md")
    }


def _tree(repo: pygit2.Repository, files: dict[str, str]) -> pygit2.Oid:
    subdirs: dict[str, dict[str, str]] = {}
    tb = repo.TreeBuilder()
    for path, text in sorted(files.items()):
        head, _, rest = path.partition("/")
        if rest:
            subdirs.setdefault(head, {})[rest] = text
        else:
            tb.insert(head, repo.create_blob(text.encode()), pygit2.GIT_FILEMODE_BLOB)
    for name, sub in sorted(subdirs.items()):
        tb.insert(name, _tree(repo, sub), pygit2.GIT_FILEMODE_TREE)
    return tb.write()


def commit(repo: pygit2.Repository, files: dict[str, str], message: str) -> str:
    """Commit `files` as the whole tree on top of HEAD (if any); returns the commit id."""
    parents = [] if repo.head_is_unborn else [repo.head.target]
    oid = repo.create_commit("HEAD", SIG, SIG, message, _tree(repo, files), parents)
    return str(oid)


def new_repo(path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(path), bare=True)
