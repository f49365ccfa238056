"""push_revert against real repos: a bare remote on disk (file://) and, for what only a
smart-protocol server can do (hooks, a ref that moves during the push), the same bare
repo served by `git http-backend` on a 127.0.0.1 port."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pygit2
import pytest
from source_helpers import Upstream, closed_port

from reconciler.source import (
    AuthFailed,
    BranchMoved,
    CommitNotFound,
    FetchResult,
    GitMirror,
    NewCommit,
    NothingToRevert,
    PushFailed,
    PushRejected,
    RemoteUnreachable,
    RevertRefused,
    RevertResult,
    SignaturePolicy,
    SourceConfigError,
    SourceError,
    observe_branch,
    push_revert,
)
from reconciler.source.revert import revert_message

NOW = 1_764_000_000


class Remote:
    """A bare repo standing in for the forge, and a developer's clone that pushes to it."""

    def __init__(self, root: Path, dev: Upstream) -> None:
        self.path = root / "remote.git"
        self.dev = dev
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.path)],
                       check=True, env=dev.env)
        dev.git("remote", "add", "origin", str(self.path))

    def git(self, *args: str) -> str:
        out = subprocess.run(["git", *args], cwd=self.path, env=self.dev.env, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip()

    def head(self, branch: str = "main") -> str:
        return self.git("rev-parse", f"refs/heads/{branch}")

    def push(self, commit: str, branch: str = "main") -> None:
        self.dev.git("push", "-q", "--force", "origin", f"{commit}:refs/heads/{branch}")

    def tree(self, commit: str) -> str:
        return self.git("rev-parse", f"{commit}^{{tree}}")


@pytest.fixture
def remote(tmp_path: Path, upstream: Upstream) -> Remote:
    return Remote(tmp_path, upstream)


@pytest.fixture
def history(remote: Remote) -> dict[str, str]:
    """v1 -> v2 -> v3 on main; v1 is the good revision to roll back to."""
    dev = remote.dev
    v1 = dev.commit("v1", {"route.yaml": "weight: 100\n", "svc.yaml": "name: web\n"})
    v2 = dev.commit("v2", {"route.yaml": "weight: 50\n"})
    v3 = dev.commit("v3", {"new.yaml": "kind: Route\n"})
    remote.push(v3)
    return {"v1": v1, "v2": v2, "v3": v3}


def _mirror(tmp_path: Path, url: str, cls: type[GitMirror] = GitMirror) -> GitMirror:
    mirror = cls(tmp_path / "mirror.git", url)
    mirror.fetch()
    return mirror


def _revert(
    mirror: GitMirror,
    head: str,
    target: str,
    *,
    message: str | None = None,
    author_name: str = "meshcd",
    author_email: str = "meshcd@localhost",
    now: int | None = NOW,
) -> RevertResult:
    return push_revert(
        mirror, "main", expected_head=head, target_commit=target,
        message=f"Roll back to {target[:8]}" if message is None else message,
        author_name=author_name, author_email=author_email, now=now,
    )


# -- the happy path --------------------------------------------------------------------


def test_revert_pushes_the_targets_tree_on_top_of_the_head(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    mirror = _mirror(tmp_path, f"file://{remote.path}")
    v1, v3 = history["v1"], history["v3"]

    result = _revert(mirror, v3, v1, message="Roll back web to v1\n\nThe canary failed.\n",
                     author_name="Rita Rollback", author_email="rita@example.com")

    assert result.parent == v3
    assert result.pushed_to == "refs/heads/main"
    assert remote.head() == result.commit  # the remote branch moved, non-force on top of v3
    assert remote.git("rev-parse", f"{result.commit}^") == v3
    assert remote.git("rev-list", "--count", result.commit) == "4"
    assert remote.tree(result.commit) == remote.tree(v1)
    fields = remote.git("log", "-1", "--format=%an|%ae|%at|%cn|%ce|%ct|%ad", "--date=raw",
                        result.commit)
    assert fields == f"Rita Rollback|rita@example.com|{NOW}|Rita Rollback|rita@example.com|{NOW}|{NOW} +0000"
    assert remote.git("log", "-1", "--format=%B", result.commit) == (
        f"Roll back web to v1\n\nThe canary failed.\n\nMeshcd-Rollback-To: {v1}"
    )
    # git itself reads the trailer
    assert remote.git(
        "log", "-1", "--format=%(trailers:key=Meshcd-Rollback-To,valueonly)", result.commit
    ) == v1
    assert remote.git("fsck", "--strict", "--no-dangling") == ""
    # the developer's clone fast-forwards onto it and gets v1's files back
    dev = remote.dev
    dev.git("pull", "-q", "--ff-only", "origin", "main")
    assert (dev.path / "route.yaml").read_text() == "weight: 100\n"
    assert not (dev.path / "new.yaml").exists()


def test_the_mirror_already_has_the_revert_and_observe_sees_a_fast_forward(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    mirror = _mirror(tmp_path, f"file://{remote.path}")
    result = _revert(mirror, history["v3"], history["v2"])

    assert mirror.resolve("main") == result.commit
    seen = observe_branch(mirror, "main", history["v3"], SignaturePolicy(), now=NOW)
    assert seen.event == NewCommit(history["v3"], result.commit, fast_forward=True)
    assert seen.commit is not None and seen.commit.tree == remote.tree(history["v2"])
    assert seen.commit.author.time == NOW
    assert mirror.fetch() == FetchResult(f"file://{remote.path}", (), 0)  # nothing new


def test_the_time_defaults_to_now(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    import time

    mirror = _mirror(tmp_path, f"file://{remote.path}")
    before = int(time.time())
    result = _revert(mirror, history["v3"], history["v1"], now=None)
    stamp = int(remote.git("log", "-1", "--format=%ct", result.commit))
    assert before <= stamp <= int(time.time())


def test_a_second_revert_goes_on_top_of_the_first(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    mirror = _mirror(tmp_path, f"file://{remote.path}")
    first = _revert(mirror, history["v3"], history["v1"])
    second = _revert(mirror, first.commit, history["v3"], message="Roll forward to v3")
    assert remote.head() == second.commit
    assert second.parent == first.commit
    assert remote.tree(second.commit) == remote.tree(history["v3"])


# -- refusals before the push ----------------------------------------------------------


def test_refuses_when_someone_pushed_after_the_expected_head(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    mirror = _mirror(tmp_path, f"file://{remote.path}")
    v4 = remote.dev.commit("v4 by someone else", {"svc.yaml": "name: web2\n"})
    remote.push(v4)

    with pytest.raises(BranchMoved) as caught:
        _revert(mirror, history["v3"], history["v1"])

    error = caught.value
    assert isinstance(error, RevertRefused) and isinstance(error, SourceError)
    assert error.temporary is False
    assert (error.expected, error.actual, error.branch) == (history["v3"], v4, "main")
    assert history["v3"] in str(error) and v4 in str(error)
    assert remote.head() == v4  # untouched
    assert mirror.resolve("main") == v4  # the mirror did fetch


def test_refuses_a_missing_branch_and_a_deleted_one(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    mirror = _mirror(tmp_path, f"file://{remote.path}")
    with pytest.raises(BranchMoved, match="'release' is not on") as caught:
        push_revert(mirror, "release", expected_head=history["v3"],
                    target_commit=history["v1"], message="x", now=NOW)
    assert caught.value.actual is None

    remote.git("branch", "doomed", history["v3"])
    mirror.fetch()
    remote.git("branch", "-D", "doomed")
    with pytest.raises(BranchMoved, match="'doomed' is not on"):
        push_revert(mirror, "doomed", expected_head=history["v3"],
                    target_commit=history["v1"], message="x", now=NOW)
    assert "refs/heads/doomed" not in remote.git("for-each-ref")


def test_refuses_when_nothing_changes(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    mirror = _mirror(tmp_path, f"file://{remote.path}")
    v3 = history["v3"]
    with pytest.raises(NothingToRevert, match="nothing to revert"):
        _revert(mirror, v3, v3)

    # a different commit with the same tree is just as empty a revert
    remote.dev.git("commit", "-q", "--allow-empty", "-m", "empty")
    same_tree = remote.dev.head()
    remote.push(same_tree)
    with pytest.raises(NothingToRevert) as caught:
        _revert(mirror, same_tree, v3)
    assert caught.value.temporary is False
    assert remote.head() == same_tree


def test_refuses_an_unknown_or_malformed_target(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    mirror = _mirror(tmp_path, f"file://{remote.path}")
    v3 = history["v3"]
    with pytest.raises(CommitNotFound, match="no commit 0123"):
        _revert(mirror, v3, "0123456789abcdef0123456789abcdef01234567")
    with pytest.raises(CommitNotFound):  # a tree is not a commit
        _revert(mirror, v3, remote.tree(history["v1"]))
    with pytest.raises(CommitNotFound, match="not a full commit id"):
        _revert(mirror, v3, history["v1"][:12])
    with pytest.raises(CommitNotFound, match="expected head"):
        _revert(mirror, "HEAD", history["v1"])
    assert remote.head() == v3


def test_bad_arguments_are_refused_before_touching_the_network(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    mirror = GitMirror(tmp_path / "mirror.git", f"file://{remote.path}")
    v1, v3 = history["v1"], history["v3"]
    with pytest.raises(SourceConfigError, match="needs a message"):
        _revert(mirror, v3, v1, message=" \n\n ")
    with pytest.raises(SourceConfigError, match="unusable author"):
        _revert(mirror, v3, v1, author_name="Eve <evil>")
    with pytest.raises(SourceConfigError, match="not a valid branch name"):
        push_revert(mirror, "bad..name", expected_head=v3, target_commit=v1, message="x")
    assert mirror.branches() == {}  # no fetch happened


def test_an_unreachable_remote_is_the_fetch_error(tmp_path: Path) -> None:
    mirror = GitMirror(tmp_path / "mirror.git", f"http://127.0.0.1:{closed_port()}/x.git",
                       connect_timeout=5)
    with pytest.raises(RemoteUnreachable) as caught:
        _revert(mirror, "a" * 40, "b" * 40)
    assert caught.value.temporary is True


# -- refusals at push time -------------------------------------------------------------


class RacingMirror(GitMirror):
    """A real mirror whose fetch is followed at once by someone else's real push: the
    branch moves between the revert's fetch and its push."""

    race: Callable[[], None] = staticmethod(lambda: None)

    def fetch_into(self, repo: pygit2.Repository) -> FetchResult:
        result = super().fetch_into(repo)
        self.race()
        return result


def test_refuses_when_the_branch_moves_between_fetch_and_push(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    mirror = _mirror(tmp_path, f"file://{remote.path}", RacingMirror)
    v4 = remote.dev.commit("v4 lands during the revert", {"svc.yaml": "name: other\n"})
    assert isinstance(mirror, RacingMirror)
    mirror.race = lambda: remote.push(v4)

    with pytest.raises(BranchMoved, match=r"moved to \w+ while the revert was pushed") as caught:
        _revert(mirror, history["v3"], history["v1"])

    assert caught.value.actual == v4
    assert remote.head() == v4  # their push stands
    assert mirror.resolve("main") == history["v3"]  # ours was not recorded; next fetch sees v4


def test_refuses_when_the_branch_is_reset_back_between_fetch_and_push(
    tmp_path: Path, remote: Remote, history: dict[str, str]
) -> None:
    # Resetting to an ancestor would let a plain non-force push through (v3+revert
    # fast-forwards v2); the lease on expected_head still refuses it.
    mirror = _mirror(tmp_path, f"file://{remote.path}", RacingMirror)
    assert isinstance(mirror, RacingMirror)
    mirror.race = lambda: remote.push(history["v2"])

    with pytest.raises(BranchMoved) as caught:
        _revert(mirror, history["v3"], history["v1"])
    assert caught.value.actual == history["v2"]
    assert remote.head() == history["v2"]


# -- over a smart-protocol server (git http-backend) ----------------------------------


class GitHttp:
    """`git http-backend` behind a threaded HTTP server on 127.0.0.1 (push enabled)."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.refuse_receive_pack: int | None = None  # an HTTP status to answer pushes with
        remote.git("config", "http.receivepack", "true")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.serve(self)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/remote.git"

    def hook(self, script: str) -> None:
        path = self.remote.path / "hooks" / "pre-receive"
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(0o755)

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        path, _, query = request.path.partition("?")
        if self.refuse_receive_pack and "receive-pack" in request.path:
            request.send_response(self.refuse_receive_pack)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        body = _read_body(request) if request.command == "POST" else b""
        env = {
            "PATH": os.environ["PATH"],
            "HOME": self.remote.dev.env["HOME"],
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": str(self.remote.path.parent),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": request.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_USER": "pusher",
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        request.send_response(status)
        for name, value in headers:
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if request.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return request.rfile.read(int(request.headers.get("Content-Length") or 0))
    body = bytearray()  # libgit2 streams pushes chunked
    while True:
        size = int(request.rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)
        body += request.rfile.read(size)
        request.rfile.readline()


@pytest.fixture
def http(remote: Remote, history: dict[str, str]) -> Iterator[GitHttp]:
    server = GitHttp(remote)
    yield server
    server.close()


def test_a_revert_over_http(tmp_path: Path, http: GitHttp, history: dict[str, str]) -> None:
    mirror = _mirror(tmp_path, http.url)
    result = _revert(mirror, history["v3"], history["v1"])
    assert http.remote.head() == result.commit == mirror.resolve("main")
    assert http.remote.tree(result.commit) == http.remote.tree(history["v1"])


def test_a_hook_that_declines_is_push_rejected_with_the_remotes_words(
    tmp_path: Path, http: GitHttp, history: dict[str, str]
) -> None:
    mirror = _mirror(tmp_path, http.url)
    http.hook('echo "rollbacks are frozen until 22:00" >&2\nexit 1\n')

    with pytest.raises(PushRejected) as caught:
        _revert(mirror, history["v3"], history["v1"])

    error = caught.value
    assert error.reason == "pre-receive hook declined"
    assert "rollbacks are frozen until 22:00" in str(error)
    assert error.temporary is False
    assert http.remote.head() == history["v3"]
    assert mirror.resolve("main") == history["v3"]  # the mirror was not moved


def test_a_branch_moved_on_the_server_during_the_push_is_branch_moved(
    tmp_path: Path, http: GitHttp, history: dict[str, str]
) -> None:
    # The hook lands another commit on main after the remote advertised v3 and before it
    # updates the ref: the race only the server can see. receive-pack's ref update then
    # finds main elsewhere and refuses.
    mirror = _mirror(tmp_path, http.url)
    v2 = history["v2"]
    http.hook(f"env -u GIT_QUARANTINE_PATH git update-ref refs/heads/main {v2}\nexit 0\n")

    with pytest.raises(BranchMoved, match="failed to update ref") as caught:
        _revert(mirror, history["v3"], history["v1"])

    assert "but expected" in str(caught.value)  # receive-pack's own explanation
    assert http.remote.head() == v2
    assert mirror.resolve("main") == history["v3"]


@pytest.mark.parametrize(
    ("status", "error", "temporary"), [(403, AuthFailed, False), (500, PushFailed, True)]
)
def test_push_transport_errors_are_classified(
    tmp_path: Path, http: GitHttp, history: dict[str, str],
    status: int, error: type[SourceError], temporary: bool,
) -> None:
    mirror = _mirror(tmp_path, http.url)
    http.refuse_receive_pack = status

    with pytest.raises(error) as caught:
        _revert(mirror, history["v3"], history["v1"])

    assert caught.value.temporary is temporary
    assert http.url.removesuffix("/remote.git") in str(caught.value)
    assert http.remote.head() == history["v3"]
    assert mirror.resolve("main") == history["v3"]


# -- the message -----------------------------------------------------------------------

TARGET = "1" * 40


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Roll back", f"Roll back\n\nMeshcd-Rollback-To: {TARGET}\n"),
        ("  Roll back  \r\n\r\nbody\r\n\n\n", f"Roll back\n\nbody\n\nMeshcd-Rollback-To: {TARGET}\n"),
        # an existing trailer block is joined, as `git interpret-trailers` would
        ("Roll back\n\nwhy\n\nIncident: INC-42\nSigned-off-by: R <r@x>",
         f"Roll back\n\nwhy\n\nIncident: INC-42\nSigned-off-by: R <r@x>\nMeshcd-Rollback-To: {TARGET}\n"),
        # a subject that looks like a trailer is still the subject
        ("Fix: roll back", f"Fix: roll back\n\nMeshcd-Rollback-To: {TARGET}\n"),
        ("Roll back\n\nnot: a trailer block\nbecause this line is prose",
         f"Roll back\n\nnot: a trailer block\nbecause this line is prose\n\nMeshcd-Rollback-To: {TARGET}\n"),
    ],
)
def test_revert_message(message: str, expected: str) -> None:
    assert revert_message(message, TARGET) == expected
