from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
from source_helpers import Upstream, closed_port

from reconciler.source import (
    BranchMissing,
    CommitNotFound,
    Credentials,
    FetchFailed,
    GitMirror,
    HttpsToken,
    MirrorError,
    RefUpdate,
    RemoteUnreachable,
    RepositoryNotFound,
    SecretRef,
    SourceConfigError,
    SshKey,
)
from reconciler.source.mirror import classify_git_error, set_network_timeouts
from reconciler.source.remote_url import parse_remote_url

TOKEN = "glpat-SECRET-should-never-show"


def test_first_fetch_creates_bare_mirror_with_all_branches(
    tmp_path: Path, upstream: Upstream
) -> None:
    c1 = upstream.commit("first")
    upstream.git("branch", "staging")
    c2 = upstream.commit("second")
    mirror = GitMirror(tmp_path / "mirror.git", str(upstream.path))

    assert mirror.resolve("main") is None  # nothing fetched yet
    result = mirror.fetch()

    assert pygit2.Repository(str(tmp_path / "mirror.git")).is_bare
    assert set(result.updates) == {
        RefUpdate("refs/heads/main", None, c2),
        RefUpdate("refs/heads/staging", None, c1),
    }
    assert result.received_objects > 0
    assert result.update_for("main") == RefUpdate("refs/heads/main", None, c2)
    assert mirror.resolve("main") == c2
    assert mirror.resolve("refs/heads/staging") == c1
    assert mirror.branches() == {"main": c2, "staging": c1}


def test_second_fetch_reports_only_what_moved(tmp_path: Path, upstream: Upstream) -> None:
    old = upstream.commit("first")
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    mirror.fetch()
    assert mirror.fetch().updates == ()

    new = upstream.commit("second")
    result = mirror.fetch()
    assert result.updates == (RefUpdate("refs/heads/main", old, new),)
    assert mirror.is_ancestor(old, new)
    assert not mirror.is_ancestor(new, old)


def test_force_push_and_deleted_branch_are_mirrored(tmp_path: Path, upstream: Upstream) -> None:
    base = upstream.commit("base")
    upstream.git("checkout", "-q", "-b", "feature")
    feat = upstream.commit("feature work")
    upstream.git("checkout", "-q", "main")
    tip = upstream.commit("main work")
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    mirror.fetch()

    upstream.git("reset", "-q", "--hard", base)
    rewritten = upstream.commit("rewritten history")
    upstream.git("branch", "-D", "feature")
    result = mirror.fetch()

    assert set(result.updates) == {
        RefUpdate("refs/heads/main", tip, rewritten),
        RefUpdate("refs/heads/feature", feat, None),
    }
    assert mirror.resolve("feature") is None
    assert not mirror.is_ancestor(tip, rewritten)
    # The force-pushed-away commit is still readable from the mirror.
    assert mirror.commit_info(tip).summary == "main work"
    with pytest.raises(BranchMissing, match="feature"):
        mirror.require("feature")


def test_commit_info(tmp_path: Path, upstream: Upstream) -> None:
    parent = upstream.commit("first")
    oid = upstream.commit("Route: shift 10% to v2\n\nBecause the canary is healthy.\n")
    mirror = GitMirror(tmp_path / "m.git", (upstream.path).as_uri())
    mirror.fetch()
    info = mirror.commit_info(oid)
    assert info.id == oid
    assert info.parents == (parent,)
    assert info.tree == upstream.git("rev-parse", f"{oid}^{{tree}}")
    assert (info.author.name, info.author.email) == ("Ada Author", "ada@example.com")
    assert (info.committer.name, info.committer.email) == ("Carl Committer", "carl@example.com")
    assert info.committer.time == int(upstream.git("log", "-1", "--format=%ct", oid))
    assert info.summary == "Route: shift 10% to v2"
    assert info.message.endswith("Because the canary is healthy.\n")
    assert info.signature is None and info.signed_payload is None and not info.signed
    # A reader on another thread gets its own handle that sees the same objects.
    own = mirror.open_repository()
    assert own is not mirror.repository and own.is_bare
    commit = own.get(oid)
    assert isinstance(commit, pygit2.Commit) and str(commit.tree_id) == info.tree


def test_bad_commit_ids(tmp_path: Path, upstream: Upstream) -> None:
    upstream.commit("first")
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    mirror.fetch()
    tree = upstream.git("rev-parse", "HEAD^{tree}")
    for bad in ("not-hex", "0" * 40, tree):
        with pytest.raises(CommitNotFound):
            mirror.commit_info(bad)
    # An unknown commit is "not an ancestor": the change reads as a force-push.
    assert mirror.is_ancestor("0" * 40, mirror.require("main")) is False


@pytest.mark.parametrize("name", ["", "a..b", "bad name", "x~1", "refs/heads/", "a//b", "a/.lock"])
def test_invalid_branch_names(tmp_path: Path, upstream: Upstream, name: str) -> None:
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    with pytest.raises(SourceConfigError, match="not a valid branch name"):
        mirror.resolve(name)


def test_reopening_keeps_state_and_follows_a_new_url(
    tmp_path: Path, upstream: Upstream, make_upstream: object
) -> None:
    c1 = upstream.commit("first")
    GitMirror(tmp_path / "m.git", str(upstream.path)).fetch()
    again = GitMirror(tmp_path / "m.git", str(upstream.path))
    assert again.resolve("main") == c1
    assert again.fetch().updates == ()

    other = make_upstream("other")  # type: ignore[operator]
    c2 = other.commit("elsewhere")
    moved = GitMirror(tmp_path / "m.git", str(other.path))
    assert moved.fetch().updates == (RefUpdate("refs/heads/main", c1, c2),)
    remotes = pygit2.Repository(str(tmp_path / "m.git")).remotes
    assert [r.url for r in remotes] == [other.path.resolve().as_uri()]


def test_a_tampered_refspec_is_restored(tmp_path: Path, upstream: Upstream) -> None:
    c1 = upstream.commit("first")
    GitMirror(tmp_path / "m.git", str(upstream.path)).fetch()
    repo = pygit2.Repository(str(tmp_path / "m.git"))
    repo.config["remote.origin.fetch"] = "+refs/heads/*:refs/remotes/origin/*"
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    assert list(pygit2.Repository(str(tmp_path / "m.git")).remotes["origin"].fetch_refspecs) == [
        "+refs/heads/*:refs/heads/*"
    ]
    assert mirror.resolve("main") == c1


def test_refuses_a_work_tree_or_a_non_repo_dir(tmp_path: Path, upstream: Upstream) -> None:
    upstream.commit("first")
    with pytest.raises(MirrorError, match="work tree"):
        GitMirror(upstream.path, str(upstream.path))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file.txt").write_text("hello")
    with pytest.raises(MirrorError):
        GitMirror(junk, str(upstream.path))


def test_missing_local_repo_is_not_found(tmp_path: Path) -> None:
    mirror = GitMirror(tmp_path / "m.git", str(tmp_path / "does-not-exist.git"))
    with pytest.raises(RepositoryNotFound) as err:
        mirror.fetch()
    assert not err.value.temporary


def test_dir_that_is_not_a_repo_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    mirror = GitMirror(tmp_path / "m.git", str(tmp_path / "plain"))
    with pytest.raises(RepositoryNotFound):
        mirror.fetch()


def test_https_closed_port_is_unreachable_and_never_shows_the_token(tmp_path: Path) -> None:
    port = closed_port()
    creds = HttpsToken(SecretRef(env="MESHCD_GIT_TOKEN"))
    mirror = GitMirror(
        tmp_path / "m.git",
        f"https://127.0.0.1:{port}/org/mesh.git",
        creds,
        environ={"MESHCD_GIT_TOKEN": TOKEN},
    )
    with pytest.raises(RemoteUnreachable) as err:
        mirror.fetch()
    assert err.value.temporary
    assert f"127.0.0.1:{port}" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN not in repr(mirror)
    config = (tmp_path / "m.git" / "config").read_text()
    assert TOKEN not in config


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A 127.0.0.1 port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("scheme", ["https", "ssh"])
def test_silent_remote_times_out_as_unreachable(
    tmp_path: Path, silent_server: int, scheme: str
) -> None:
    creds: Credentials
    if scheme == "https":
        url, creds = (
            f"https://127.0.0.1:{silent_server}/org/mesh.git",
            HttpsToken(SecretRef(env="T")),
        )
    else:
        key = tmp_path / "id"
        key.write_text("unused")
        url, creds = f"ssh://git@127.0.0.1:{silent_server}/org/mesh.git", SshKey(key)
    mirror = GitMirror(
        tmp_path / "m.git", url, creds, environ={"T": TOKEN}, connect_timeout=1, io_timeout=0.5
    )
    try:
        with pytest.raises(RemoteUnreachable) as err:
            mirror.fetch()
        assert TOKEN not in str(err.value)
    finally:
        set_network_timeouts(10, 120)


def test_bad_timeouts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="timeout"):
        GitMirror(tmp_path / "m.git", str(tmp_path / "up"), connect_timeout=0)


def test_ssh_closed_port_is_unreachable(tmp_path: Path) -> None:
    port = closed_port()
    key = tmp_path / "id_ed25519"
    key.write_text("unused: the connection fails first")
    mirror = GitMirror(tmp_path / "m.git", f"ssh://git@127.0.0.1:{port}/org/mesh.git", SshKey(key))
    with pytest.raises(RemoteUnreachable, match="unreachable"):
        mirror.fetch()


def test_credentials_must_match_the_url(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="only sent over https"):
        GitMirror(tmp_path / "m.git", "ssh://git@host/org/r.git", HttpsToken(SecretRef(env="T")))


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("failed to connect to host: Connection refused", RemoteUnreachable),
        ("failed to resolve address for nohost: Name or service not known", RemoteUnreachable),
        ("SSL error: certificate verify failed", RemoteUnreachable),
        ("unexpected http status code: 401", "AuthFailed"),
        ("too many redirects or authentication replays", "AuthFailed"),
        ("ERROR: Repository not found.", RepositoryNotFound),
        ("something nobody expected", FetchFailed),
    ],
)
def test_git_error_classification(message: str, kind: object) -> None:
    from reconciler.source import AuthFailed

    expected = AuthFailed if kind == "AuthFailed" else kind
    remote = parse_remote_url("https://git.example.com/org/mesh.git")
    err = classify_git_error(f"{message} (token {TOKEN})", remote, [TOKEN])
    assert type(err) is expected
    assert TOKEN not in str(err)
    assert "https://git.example.com/org/mesh.git" in str(err)
