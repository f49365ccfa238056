"""The shipped post-receive hook (webhooks/contrib/post-receive) in a real bare repository:
`git push` reaches the generic receiver, signed, and only the watched branch triggers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI
from webhook_server import Recorder, running

from webhooks.receiver import make_router
from webhooks.settings import ReceiverSettings

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "webhooks" / "contrib" / "post-receive"
DOC = ROOT / "docs" / "webhooks.md"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("git", "curl", "python3")),
    reason="needs git, curl and python3 on PATH",
)


def git(cwd: Path, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, text=True, capture_output=True
    )
    return done.stdout + done.stderr


def test_git_push_through_the_post_receive_hook(tmp_path: Path) -> None:
    bare = tmp_path / "config.git"
    work = tmp_path / "work"
    secret = tmp_path / "generic.secret"
    secret.write_bytes(b"hook-secret-for-tests\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Ada",
        GIT_AUTHOR_EMAIL="ada@example.com",
        GIT_COMMITTER_NAME="Ada",
        GIT_COMMITTER_EMAIL="ada@example.com",
    )
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare), env=env)
    shutil.copy(HOOK, bare / "hooks" / "post-receive")
    (bare / "hooks" / "post-receive").chmod(0o755)

    rec = Recorder()
    settings = ReceiverSettings(
        watched_repo=f"file://{bare.resolve()}/",
        watched_branch="main",
        secrets={"generic": b"hook-secret-for-tests"},
    )
    app = FastAPI()
    app.include_router(make_router(settings, rec.updates.append, rec.audits.append))
    with running(app) as port:
        env.update(
            MESHCD_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/generic",
            MESHCD_WEBHOOK_SECRET_FILE=str(secret),
        )
        git(tmp_path, "init", "-q", "-b", "main", str(work), env=env)
        (work / "mesh.yaml").write_text("kind: Mesh\n")
        git(work, "add", ".", env=env)
        git(work, "commit", "-qm", "first", env=env)
        git(work, "remote", "add", "origin", str(bare), env=env)
        out = git(work, "push", "-q", "origin", "main", env=env)
        head = git(work, "rev-parse", "HEAD", env=env).strip()
        assert "refs/heads/main -> 202" in out, out
        assert [(u.ref, u.after, u.before) for u in rec.updates] == [
            ("refs/heads/main", head, "0" * 40)
        ]

        out = git(work, "push", "-q", "origin", "main:feature", env=env)
        assert "refs/heads/feature -> 200" in out and "branch_not_watched" in out
        out = git(work, "push", "-q", "origin", ":feature", env=env)
        assert "refs/heads/feature -> 200" in out
        assert len(rec.updates) == 1

        # A wrong secret is refused, and the push itself still succeeds.
        secret.write_bytes(b"not-the-secret\n")
        (work / "mesh.yaml").write_text("kind: Mesh\nspec: {}\n")
        git(work, "commit", "-qam", "second", env=env)
        out = git(work, "push", "-q", "origin", "main", env=env)
        assert "refs/heads/main -> 401" in out and "bad_signature" in out
        assert len(rec.updates) == 1
    assert [a.result for a in rec.audits] == ["accepted", "ignored", "ignored", "rejected"]


def test_the_same_push_twice_is_two_deliveries(tmp_path: Path) -> None:
    # main moves c1 -> c2, back to c1, and to c2 again: the third push's body is byte for byte
    # the first one's; with no delivery id of its own it would be dropped as a duplicate.
    bare = tmp_path / "config.git"
    work = tmp_path / "work"
    secret = tmp_path / "generic.secret"
    secret.write_bytes(b"hook-secret-for-tests\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(tmp_path), GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Ada",
               GIT_AUTHOR_EMAIL="ada@example.com", GIT_COMMITTER_NAME="Ada",
               GIT_COMMITTER_EMAIL="ada@example.com")
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare), env=env)
    shutil.copy(HOOK, bare / "hooks" / "post-receive")
    (bare / "hooks" / "post-receive").chmod(0o755)
    rec = Recorder()
    settings = ReceiverSettings(watched_repo=str(bare.resolve()), watched_branch="main",
                                secrets={"generic": b"hook-secret-for-tests"})
    app = FastAPI()
    app.include_router(make_router(settings, rec.updates.append, rec.audits.append))
    with running(app) as port:
        env.update(MESHCD_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/generic",
                   MESHCD_WEBHOOK_SECRET_FILE=str(secret))
        git(tmp_path, "init", "-q", "-b", "main", str(work), env=env)
        git(work, "remote", "add", "origin", str(bare), env=env)
        (work / "mesh.yaml").write_text("kind: Mesh\n")
        git(work, "add", ".", env=env)
        git(work, "commit", "-qm", "c1", env=env)
        git(work, "push", "-q", "origin", "main", env=env)
        c1 = git(work, "rev-parse", "HEAD", env=env).strip()
        (work / "mesh.yaml").write_text("kind: Mesh\nspec: {}\n")
        git(work, "commit", "-qam", "c2", env=env)
        c2 = git(work, "rev-parse", "HEAD", env=env).strip()
        outs = [git(work, "push", "-q", "origin", "main", env=env),
                git(work, "push", "-q", "-f", "origin", f"{c1}:main", env=env),
                git(work, "push", "-q", "origin", f"{c2}:main", env=env)]
    for out in outs:
        assert "refs/heads/main -> 202" in out, outs
    assert [(u.before, u.after) for u in rec.updates[1:]] == [(c1, c2), (c2, c1), (c1, c2)]
    ids = [a.delivery_id for a in rec.audits]
    assert len(set(ids)) == 4 and all(i and i.startswith("post-receive:") for i in ids), ids


def test_the_hook_in_the_docs_is_the_shipped_one() -> None:
    match = re.search(
        r"```sh\n(#!/bin/sh\n# meshcd post-receive hook.*?)```", DOC.read_text(), re.S
    )
    assert match is not None
    assert match.group(1) == HOOK.read_text()
