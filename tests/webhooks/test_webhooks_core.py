"""The pure core without sockets: signatures (with GitHub's published vector), strict JSON,
repository URL keys, dedup, the decision, settings, and adapter details."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from webhook_cases import PAYLOADS

from webhooks.adapters import ADAPTERS, bitbucket, generic, github, gitlab
from webhooks.adapters.gitea import parse_forgejo, parse_gitea
from webhooks.decision import decide
from webhooks.dedup import RecentIds
from webhooks.errors import (
    AmbiguousHeader,
    BadHeader,
    BadSignature,
    InvalidJson,
    InvalidPayload,
    MissingSignature,
    NotConfigured,
    Rejection,
    UnsupportedAlgorithm,
)
from webhooks.headers import Headers
from webhooks.model import Ignored, Ping, Push, RefUpdate
from webhooks.repo_url import (
    InvalidRepoUrl,
    canonical_repo_key,
    matches_repo,
    project_matches,
)
from webhooks.sample import build_sample, signature_headers
from webhooks.settings import (
    HARD_MAX_BODY,
    MIB,
    ReceiverSettings,
    ReceiverSettingsError,
    load_secret,
    secret_from_file,
)
from webhooks.signatures import hmac_sha256_hex, verify_prefixed
from webhooks.strict_json import loads_object

SECRET = b"s3cret-for-unit-tests"

# --- signatures -------------------------------------------------------------------------


def test_github_published_hmac_vector() -> None:
    # From GitHub's "Validating webhook deliveries" documentation.
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert hmac_sha256_hex(secret, body) == expected
    verify_prefixed(
        Headers({"X-Hub-Signature-256": f"sha256={expected}"}), "x-hub-signature-256", secret, body
    )
    with pytest.raises(BadSignature):
        verify_prefixed(
            Headers({"X-Hub-Signature-256": f"sha256={expected}"}),
            "x-hub-signature-256",
            secret,
            b"Hello, World?",
        )
    flipped = expected[:-1] + "f"
    with pytest.raises(BadSignature):
        verify_prefixed(
            Headers({"x-hub-signature-256": f"sha256={flipped}"}),
            "x-hub-signature-256",
            secret,
            body,
        )


@pytest.mark.parametrize(
    "value",
    [
        "sha1=abc",
        "SHA512=" + "0" * 128,
        "md5=x",
        "=abc",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    ],
)
def test_only_sha256_prefix_is_accepted(value: str) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        verify_prefixed(Headers({"X-Hub-Signature": value}), "x-hub-signature", SECRET, b"{}")


def test_uppercase_hex_signature_is_accepted_and_empty_secret_is_refused() -> None:
    body = b'{"a": 1}'
    sig = hmac_sha256_hex(SECRET, body).upper()
    verify_prefixed(
        Headers({"X-Meshcd-Signature": f"sha256={sig}"}), "x-meshcd-signature", SECRET, body
    )
    for parse in ADAPTERS.values():
        with pytest.raises(NotConfigured):
            parse({}, body, b"")


def test_github_sha1_header_alone_is_refused_even_when_correct() -> None:
    import hashlib
    import hmac

    s = build_sample("github", SECRET, repo_url="https://github.com/a/b")
    headers = {k: v for k, v in s.headers.items() if k != "X-Hub-Signature-256"}
    headers["X-Hub-Signature"] = "sha1=" + hmac.new(SECRET, s.body, hashlib.sha1).hexdigest()
    with pytest.raises(UnsupportedAlgorithm):
        github.parse(headers, s.body, SECRET)


def test_gitlab_token_compares_raw_header_bytes() -> None:
    secret = "tökén".encode()
    s = build_sample("gitlab", secret, repo_url="https://gitlab.com/a/b")
    # A server hands header bytes over decoded as latin-1.
    headers = dict(s.headers, **{"X-Gitlab-Token": secret.decode("latin-1")})
    assert isinstance(gitlab.parse(headers, s.body, secret), Push)
    with pytest.raises(BadSignature):
        gitlab.parse(dict(headers, **{"X-Gitlab-Token": "tökén!"}), s.body, secret)
    with pytest.raises(MissingSignature):
        gitlab.parse({k: v for k, v in headers.items() if k != "X-Gitlab-Token"}, s.body, secret)


def test_headers_are_case_insensitive_and_conflicts_are_refused() -> None:
    s = build_sample("generic", SECRET, repo_url="/srv/git/x.git")
    lowered = {k.lower(): v for k, v in s.headers.items()}
    assert isinstance(generic.parse(lowered, s.body, SECRET), Push)
    conflicting = dict(s.headers, **{"x-meshcd-signature": "sha256=" + "0" * 64})
    with pytest.raises(AmbiguousHeader):
        generic.parse(conflicting, s.body, SECRET)


# --- strict JSON ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b'{"a": 1e400}',
        b'{"a": 1, "a": 1}',
        b'{"a": {"b": 1, "b": 2}}',
        b"[1]",
        b"1",
        b'"x"',
        b"true",
        b"null",
        b"",
        b"{",
        b'{"a": 1} trailing',
        '{"a": "é"}'.encode("utf-16"),
        b"\xef\xbb\xbf{}",
        b"[" * 50_000,
        b'{"a": ' + b"9" * 5000 + b"}",
    ],
)
def test_strict_json_refuses(body: bytes) -> None:
    with pytest.raises(InvalidJson):
        loads_object(body)


def test_strict_json_types_and_paths() -> None:
    obj = loads_object(b'{"s": "x", "n": 1, "a": [1], "o": {"k": null}, "f": 1.5}')
    assert obj.string("s") == "x" and obj.arr("a") == [1] and obj.opt_string("missing") is None
    with pytest.raises(InvalidPayload, match=r"\$\.n must be a string, not number"):
        obj.string("n")
    with pytest.raises(InvalidPayload, match=r"\$\.s must be an array"):
        obj.arr("s")
    with pytest.raises(InvalidPayload, match=r"\$\.o\.q is missing"):
        obj.obj("o").string("q")
    with pytest.raises(InvalidPayload, match=r"\$\.a\[0\] must be an object"):
        obj.objs("a")
    lone = loads_object(b'{"s": "\\ud800"}')
    with pytest.raises(InvalidPayload, match="not valid Unicode"):
        lone.string("s")


@pytest.mark.parametrize("sha", ["a" * 40, "A" * 40, "0123456789abcdef" * 4])
def test_sha_shapes_accepted(sha: str) -> None:
    assert loads_object(json.dumps({"x": sha}).encode()).sha("x") == sha.lower()


@pytest.mark.parametrize(
    "sha", ["a" * 39, "a" * 41, "a" * 63, "a" * 65, "z" * 40, "", " " + "a" * 40]
)
def test_sha_shapes_refused(sha: str) -> None:
    with pytest.raises(InvalidPayload):
        loads_object(json.dumps({"x": sha}).encode()).sha("x")


@pytest.mark.parametrize(
    "ref", ["refs/heads/main", "refs/heads/feature/x-1", "refs/tags/v1.0", "refs/heads/ünïcode"]
)
def test_ref_shapes_accepted(ref: str) -> None:
    assert loads_object(json.dumps({"r": ref}).encode()).ref("r") == ref


@pytest.mark.parametrize(
    "ref",
    [
        "main",
        "heads/main",
        "refs/heads/",
        "refs/heads/a..b",
        "refs/heads/a b",
        "refs/heads/a~1",
        "refs/heads/x.lock",
        "refs/heads/a//b",
        "refs/heads/.hidden",
        "refs/heads/a\x00",
        "refs/heads/x@{1}",
        "refs/heads/" + "x" * 2000,
    ],
)
def test_ref_shapes_refused(ref: str) -> None:
    with pytest.raises(InvalidPayload):
        loads_object(json.dumps({"r": ref}).encode()).ref("r")


# --- repository URL keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/mesh-config",
        "https://github.com/acme/mesh-config.git",
        "https://github.com/acme/mesh-config/",
        "https://github.com/acme/mesh-config.git/",
        "HTTPS://GitHub.COM/Acme/Mesh-Config.GIT",
        "http://github.com:80/acme/mesh-config",
        "https://token:x-oauth@github.com:443/acme/mesh-config.git",
        "https://github.com/acme/mesh-config.git?x=1#frag",
        "ssh://git@github.com/acme/mesh-config.git",
        "ssh://git@github.com:22/acme/mesh-config.git",
        "git+ssh://git@github.com/acme/mesh-config",
        "git@github.com:acme/mesh-config.git",
        "github.com:acme/mesh-config",
        "git@github.com:/acme/mesh-config.git",
        "git://github.com/acme/mesh-config.git",
        "  https://github.com./acme//mesh-config  ",
    ],
)
def test_url_forms_share_one_key(url: str) -> None:
    assert canonical_repo_key(url) == "github.com/acme/mesh-config"


def test_url_key_details() -> None:
    # GitLab subgroups keep every segment; non-default ports (Bitbucket DC ssh) are dropped.
    assert (
        canonical_repo_key("ssh://git@gitlab.example.com:2222/g/sub/repo.git")
        == "gitlab.example.com/g/sub/repo"
    )
    assert canonical_repo_key("ssh://git@bb.example:7999/plat/repo.git") == canonical_repo_key(
        "https://bb.example/plat/repo.git"
    )
    assert canonical_repo_key("git@[::1]:a/b.git") == canonical_repo_key("ssh://[::1]:22/a/b")
    # Local repositories keep their case; network paths fold unless asked not to.
    assert canonical_repo_key("/srv/Git/Repo.git") == "file:/srv/Git/Repo"
    assert canonical_repo_key("file:///srv/Git/Repo.git/") == "file:/srv/Git/Repo"
    assert canonical_repo_key("git@h:Owner/Repo", fold_path_case=False) == "h/Owner/Repo"
    assert canonical_repo_key("https://github.com/acme/mesh-config") != canonical_repo_key(
        "https://github.com/acme/mesh-config-2"
    )
    assert canonical_repo_key("https://github.com/acme/mesh-config") != canonical_repo_key(
        "https://gitlab.com/acme/mesh-config"
    )


@pytest.mark.parametrize(
    "url",
    [
        "",
        "https://github.com",
        "https://github.com/",
        "ftp://h/a/b",
        "https://h/a/../b",
        "not a url",
        "https://h:99999/a/b",
        "https://h/.git",
        "git@:a/b",
        "https://h/a b/c",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRepoUrl):
        canonical_repo_key(url)


def test_matches_repo_skips_unusable_urls() -> None:
    update = RefUpdate(
        "github",
        ("::garbage::", "git@github.com:acme/x.git"),
        "refs/heads/main",
        "a" * 40,
        "b" * 40,
        "d",
        "p",
        "push",
    )
    assert matches_repo(update, "https://github.com/ACME/x")
    assert not matches_repo(update, "https://github.com/acme/y")


# --- dedup and decision -----------------------------------------------------------------


def test_recent_ids_is_bounded_lru() -> None:
    recent = RecentIds(3)
    assert [recent.check_and_add(k) for k in "abc"] == [False] * 3
    assert recent.check_and_add("a")  # refreshed: now b is the oldest
    assert not recent.check_and_add("d")
    assert len(recent) == 3 and "b" not in recent and "a" in recent
    recent.forget("a")
    assert not recent.check_and_add("a")
    for i in range(10_000):
        recent.check_and_add(str(i))
    assert len(recent) == 3


def _update(
    ref: str = "refs/heads/main", after: str = "b" * 40, url: str = "https://h/o/r"
) -> RefUpdate:
    return RefUpdate("bitbucket", (url,), ref, "a" * 40, after, "d", "p", "repo:push")


@pytest.mark.parametrize(
    ("updates", "result", "reason"),
    [
        ((), "ignored", "no_ref_changes"),
        ((_update(url="https://h/o/other"),), "ignored", "repo_not_watched"),
        ((_update(ref="refs/heads/dev"),), "ignored", "branch_not_watched"),
        ((_update(ref="refs/tags/v1"),), "ignored", "tag_push"),
        (
            (_update(ref="refs/tags/v1"), _update(ref="refs/heads/dev")),
            "ignored",
            "branch_not_watched",
        ),
        ((_update(after="0" * 40),), "ignored", "branch_deleted"),
        ((_update(ref="refs/heads/dev"), _update()), "accepted", "push_to_watched_branch"),
    ],
)
def test_decision(updates: tuple[RefUpdate, ...], result: str, reason: str) -> None:
    decision = decide(
        Push("bitbucket", "d", "repo:push", updates),
        "h/o/r",
        "refs/heads/main",
        fold_path_case=True,
    )
    assert (decision.result, decision.reason) == (result, reason)


# --- settings ---------------------------------------------------------------------------


def test_settings_bounds_are_checked_when_built(tmp_path: Path) -> None:
    base = {"watched_repo": "https://github.com/a/b", "watched_branch": "main"}
    assert ReceiverSettings(**base).max_body_bytes == MIB  # type: ignore[arg-type]
    assert ReceiverSettings(**base, max_body_bytes=HARD_MAX_BODY).max_body_bytes == 25 * MIB  # type: ignore[arg-type]
    with pytest.raises(ReceiverSettingsError, match="25 MiB"):
        ReceiverSettings(**base, max_body_bytes=HARD_MAX_BODY + 1)  # type: ignore[arg-type]
    with pytest.raises(ReceiverSettingsError):
        ReceiverSettings(**base, body_timeout_s=0)  # type: ignore[arg-type]
    with pytest.raises(ReceiverSettingsError, match="unknown forges"):
        ReceiverSettings(**base, secrets={"sourceforge": b"x"})  # type: ignore[arg-type]
    with pytest.raises(ReceiverSettingsError, match="empty secret"):
        ReceiverSettings(**base, secrets={"github": b""})  # type: ignore[arg-type]
    with pytest.raises(ReceiverSettingsError, match="watched_repo"):
        ReceiverSettings(watched_repo="nope", watched_branch="main")
    s = ReceiverSettings(watched_repo="git@github.com:A/B.git", watched_branch="refs/heads/main")
    assert s.watched_ref == "refs/heads/main" and s.watched_key == "github.com/a/b"


def test_secrets_from_files_and_env(tmp_path: Path) -> None:
    path = tmp_path / "github.secret"
    path.write_bytes(b"from-a-file\n")
    assert secret_from_file(path) == b"from-a-file"
    assert load_secret(f"file:{path}") == b"from-a-file"
    assert load_secret("env:GH_HOOK", {"GH_HOOK": "from-env"}) == b"from-env"
    (tmp_path / "empty").write_bytes(b"\n")
    for bad in (
        f"file:{tmp_path / 'empty'}",
        f"file:{tmp_path / 'absent'}",
        "env:UNSET",
        "plain-secret-on-the-command-line",
    ):
        with pytest.raises(ReceiverSettingsError):
            load_secret(bad, {})
    settings = ReceiverSettings.from_sources(
        watched_repo="https://github.com/a/b",
        watched_branch="main",
        secret_sources={"github": f"file:{path}", "gitlab": "env:GL"},
        environ={"GL": "t"},
        max_body_bytes=2 * MIB,
    )
    assert dict(settings.secrets) == {"github": b"from-a-file", "gitlab": b"t"}


# --- adapter details --------------------------------------------------------------------


def test_bitbucket_cloud_reports_every_change_creation_and_deletion() -> None:
    payload = json.loads((PAYLOADS / "bitbucket_cloud_push.json").read_text())
    change = payload["push"]["changes"][0]
    created = json.loads(json.dumps(change))
    created["old"] = None
    created["new"]["name"] = "feature/new"
    deleted = json.loads(json.dumps(change))
    deleted["new"] = None
    deleted["old"]["name"] = "old-branch"
    tag = json.loads(json.dumps(change))
    tag["old"] = None
    tag["new"]["type"] = "annotated_tag"
    tag["new"]["name"] = "v2"
    payload["push"]["changes"] += [created, deleted, tag]
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Event-Key": "repo:push",
        **signature_headers("bitbucket", body, SECRET),
    }
    push = bitbucket.parse(headers, body, SECRET)
    assert isinstance(push, Push)
    got = [(u.ref, u.is_creation, u.is_deletion) for u in push.updates]
    assert got == [
        ("refs/heads/main", False, False),
        ("refs/heads/feature/new", True, False),
        ("refs/heads/old-branch", False, True),
        ("refs/tags/v2", True, False),
    ]
    assert push.delivery_id.startswith("sha256:")  # no X-Request-UUID: digest of the body


def test_bitbucket_data_center_names_both_clone_urls() -> None:
    body = (PAYLOADS / "bitbucket_dc_refs_changed.json").read_bytes()
    headers = {
        "Content-Type": "application/json; charset=UTF-8",
        "X-Event-Key": "repo:refs_changed",
        "X-Request-Id": "abc-123",
        **signature_headers("bitbucket", body, SECRET),
    }
    push = bitbucket.parse(headers, body, SECRET)
    assert isinstance(push, Push)
    (update,) = push.updates
    assert update.delivery_id == "abc-123" and update.pusher == "ada"
    assert matches_repo(update, "ssh://git@bitbucket.acme.example:7999/plat/mesh-config.git")
    assert matches_repo(update, "https://bitbucket.acme.example/scm/plat/mesh-config.git")


def test_gitlab_prefers_idempotency_key_and_checks_object_kind() -> None:
    s = build_sample("gitlab", SECRET, repo_url="https://gitlab.com/g/r")
    push = gitlab.parse(dict(s.headers, **{"Idempotency-Key": "retry-stable-1"}), s.body, SECRET)
    assert push.delivery_id == "retry-stable-1"
    with pytest.raises(InvalidPayload, match="object_kind"):
        gitlab.parse(dict(s.headers, **{"X-Gitlab-Event": "Tag Push Hook"}), s.body, SECRET)
    ignored = gitlab.parse(dict(s.headers, **{"X-Gitlab-Event": "System Hook"}), s.body, SECRET)
    assert isinstance(ignored, Ignored) and ignored.event == "System Hook"


def test_forgejo_accepts_the_gitea_spelling_of_its_headers() -> None:
    s = build_sample("forgejo", SECRET, repo_url="https://codeberg.org/o/r")
    gitea_only = {k: v for k, v in s.headers.items() if "forgejo" not in k.lower()}
    assert isinstance(parse_forgejo(gitea_only, s.body, SECRET), Push)


def test_bad_delivery_id_is_refused_and_github_requires_one() -> None:
    s = build_sample("github", SECRET, repo_url="https://github.com/a/b")
    with pytest.raises(BadHeader):
        github.parse(dict(s.headers, **{"X-GitHub-Delivery": "x" * 200}), s.body, SECRET)
    with pytest.raises(BadHeader):
        github.parse(dict(s.headers, **{"X-GitHub-Delivery": "a\tb"}), s.body, SECRET)
    with pytest.raises(Rejection, match="X-GitHub-Delivery"):
        github.parse(
            {k: v for k, v in s.headers.items() if k != "X-GitHub-Delivery"}, s.body, SECRET
        )


def test_github_ping_and_generic_unknown_keys() -> None:
    body = (PAYLOADS / "github_ping.json").read_bytes()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "p-1",
        **signature_headers("github", body, SECRET),
    }
    assert github.parse(headers, body, SECRET) == Ping("github", "p-1", "ping")
    payload = json.loads((PAYLOADS / "generic_push.json").read_text())
    payload["branch"] = "main"
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **signature_headers("generic", body, SECRET)}
    with pytest.raises(InvalidPayload, match="unknown keys: branch"):
        generic.parse(headers, body, SECRET)
    del payload["branch"]
    for bad_repo in ("", "not a url", "https://host-only.example"):
        payload["repo"] = bad_repo
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **signature_headers("generic", body, SECRET)}
        with pytest.raises(InvalidPayload, match="repo is not a repository URL"):
            generic.parse(headers, body, SECRET)


@pytest.mark.parametrize("forge", list(ADAPTERS))
def test_samples_verify_with_their_adapter(forge: str) -> None:
    s = build_sample(
        forge,
        SECRET,
        repo_url="git@git.example.com:Team/Repo.git",
        branch="release",
        delivery_id="d-1",
    )
    push = ADAPTERS[forge](s.headers, s.body, SECRET)
    assert isinstance(push, Push)
    (update,) = push.updates
    assert update.ref == "refs/heads/release" and update.delivery_id == "d-1"
    assert matches_repo(update, "https://git.example.com/team/repo")
    with pytest.raises(BadSignature):
        ADAPTERS[forge](s.headers, s.body, SECRET + b"x")


# --- issue 17: deliveries real forges send that are not pushes ---------------------------


def _dc_headers(body: bytes, event: str = "repo:refs_changed") -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=UTF-8",
        "X-Event-Key": event,
        "X-Request-Id": "dc-1",
        **signature_headers("bitbucket", body, SECRET),
    }


def test_bitbucket_data_center_without_links_is_matched_by_project_and_slug() -> None:
    body = (PAYLOADS / "bitbucket_dc_refs_changed_no_links.json").read_bytes()
    push = bitbucket.parse(_dc_headers(body), body, SECRET)
    assert isinstance(push, Push)
    (update,) = push.updates
    assert update.repo_urls == () and update.project == ("PLAT", "mesh-config")
    watched = [
        "https://bitbucket.acme.example/scm/plat/mesh-config.git",
        "https://bitbucket.acme.example/bitbucket/scm/PLAT/mesh-config.git",  # context path
        "ssh://git@bitbucket.acme.example:7999/plat/mesh-config.git",
    ]
    for url in watched:
        for fold in (True, False):
            decision = decide(push, canonical_repo_key(url, fold_path_case=fold),
                              "refs/heads/main", fold_path_case=fold)
            assert (decision.result, decision.reason) == ("accepted", "push_to_watched_branch"), url
    for other in [
        "https://bitbucket.acme.example/scm/plat/other.git",
        "https://bitbucket.acme.example/scm/ops/mesh-config.git",
        "https://bitbucket.acme.example/plat/x/mesh-config.git",  # not after scm/
        "/srv/git/plat/mesh-config.git",
    ]:
        decision = decide(push, canonical_repo_key(other), "refs/heads/main", fold_path_case=True)
        assert decision.reason == "repo_not_watched", other


def test_project_is_used_only_when_the_payload_names_no_url() -> None:
    # links present and pointing elsewhere: the project key and slug do not override them
    update = RefUpdate("bitbucket", ("https://h/scm/ops/other.git",), "refs/heads/main",
                       "a" * 40, "b" * 40, "d", "p", "repo:refs_changed", ("PLAT", "mesh-config"))
    decision = decide(Push("bitbucket", "d", "repo:refs_changed", (update,)),
                      "h/scm/plat/mesh-config", "refs/heads/main", fold_path_case=True)
    assert decision.reason == "repo_not_watched"
    assert project_matches(("PLAT", "mesh-config"), "h/scm/plat/mesh-config")
    assert not project_matches(("PLAT", "mesh-config"), "h/mesh-config")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("project"), "project"),
        (lambda r: r["project"].update(key="a/b"), "project key"),
        (lambda r: r.update(slug="../x"), "slug"),
    ],
)
def test_bitbucket_data_center_without_links_needs_a_usable_project_and_slug(
    change: object, message: str
) -> None:
    payload = json.loads((PAYLOADS / "bitbucket_dc_refs_changed_no_links.json").read_text())
    change(payload["repository"])  # type: ignore[operator]
    body = json.dumps(payload).encode()
    with pytest.raises(InvalidPayload, match=message):
        bitbucket.parse(_dc_headers(body), body, SECRET)


def test_bitbucket_unsigned_test_connection_ping_is_answered_unread() -> None:
    body = b"not even json: never parsed"
    headers = {"Content-Type": "application/json", "X-Event-Key": "diagnostics:ping",
               "X-Request-Id": "ping-1"}
    assert bitbucket.parse(headers, body, SECRET) == Ping(
        "bitbucket", "ping-1", "diagnostics:ping", signed=False
    )
    # A signed ping is still verified, and a wrong signature still refused.
    good = (PAYLOADS / "bitbucket_dc_ping.json").read_bytes()
    signed = bitbucket.parse(_dc_headers(good, "diagnostics:ping"), good, SECRET)
    assert isinstance(signed, Ping) and signed.signed
    with pytest.raises(BadSignature):
        bitbucket.parse(_dc_headers(good, "diagnostics:ping"), good + b" ", SECRET)
    # Only the ping goes unsigned: a push without a signature is still refused.
    push = (PAYLOADS / "bitbucket_dc_refs_changed.json").read_bytes()
    with pytest.raises(MissingSignature):
        bitbucket.parse({"Content-Type": "application/json", "X-Event-Key": "repo:refs_changed"},
                        push, SECRET)


@pytest.mark.parametrize(
    ("event", "file"),
    [
        ("Merge Request Hook", "gitlab_merge_request.json"),
        ("Pipeline Hook", "gitlab_pipeline.json"),
        ("Note Hook", "gitlab_note.json"),
    ],
)
def test_gitlab_other_events_with_a_valid_token_are_ignored(event: str, file: str) -> None:
    body = (PAYLOADS / file).read_bytes()
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": event,
               "X-Gitlab-Token": SECRET.decode(), "X-Gitlab-Event-UUID": "e-1"}
    assert gitlab.parse(headers, body, SECRET) == Ignored("gitlab", "e-1", event)
    with pytest.raises(BadSignature):
        gitlab.parse(dict(headers, **{"X-Gitlab-Token": "wrong"}), body, SECRET)


def test_gitea_delete_event_is_a_branch_deletion() -> None:
    body = (PAYLOADS / "gitea_delete.json").read_bytes()
    headers = {"Content-Type": "application/json", "X-Gitea-Event": "delete",
               "X-Gitea-Delivery": "del-1", **signature_headers("gitea", body, SECRET)}
    push = parse_gitea(headers, body, SECRET)
    assert isinstance(push, Push)
    (update,) = push.updates
    assert (update.ref, update.is_deletion, update.pusher) == ("refs/heads/main", True, "ada")
    key = canonical_repo_key("git@gitea.example.com:platform/mesh-config.git")
    decision = decide(push, key, "refs/heads/main", fold_path_case=True)
    assert (decision.result, decision.reason) == ("ignored", "branch_deleted")
    payload = json.loads(body)
    payload["ref_type"] = "tag"
    payload["ref"] = "v1"
    body = json.dumps(payload).encode()
    headers.update(signature_headers("gitea", body, SECRET))
    tag = parse_gitea(headers, body, SECRET)
    assert isinstance(tag, Push) and tag.updates[0].ref == "refs/tags/v1"
    # Other Gitea events, verified: ignored.
    headers["X-Gitea-Event"] = "issues"
    assert parse_gitea(headers, body, SECRET) == Ignored("gitea", "del-1", "issues")
