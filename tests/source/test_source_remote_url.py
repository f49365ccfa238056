from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.source import RemoteUrl, SourceConfigError, parse_remote_url


def test_absolute_path_becomes_file_url(tmp_path: Path) -> None:
    r = parse_remote_url(str(tmp_path / "repo.git"))
    assert r == RemoteUrl("file", (tmp_path / "repo.git").as_uri())
    assert r.is_local


def test_relative_path_resolves_against_base_dir(tmp_path: Path) -> None:
    r = parse_remote_url("./cfg/../repo.git", base_dir=tmp_path)
    assert r.url == (tmp_path / "repo.git").as_uri()


def test_file_url_is_kept_local(tmp_path: Path) -> None:
    r = parse_remote_url((tmp_path / "a b.git").as_uri())
    assert r.scheme == "file"
    assert r.url == (tmp_path / "a b.git").as_uri()


def test_https_and_username() -> None:
    r = parse_remote_url("https://deploy@git.example.com/org/mesh.git")
    assert (r.scheme, r.username) == ("https", "deploy")
    assert str(r) == "https://deploy@git.example.com/org/mesh.git"


@pytest.mark.parametrize(
    ("text", "user"),
    [
        ("ssh://git@git.example.com:2222/org/mesh.git", "git"),
        ("git@github.com:org/mesh.git", "git"),
        ("host.example.com:org/mesh.git", None),
    ],
)
def test_ssh_forms(text: str, user: str | None) -> None:
    r = parse_remote_url(text)
    assert r.scheme == "ssh"
    assert r.username == user
    assert r.url == text  # libgit2 gets the form the user wrote


@pytest.mark.parametrize(
    "text",
    [
        "https://user:s3cr3t-token@git.example.com/org/mesh.git",
        "ssh://git:pw@host/org/mesh.git",
    ],
)
def test_password_in_url_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(SourceConfigError) as err:
        parse_remote_url(text)
    assert "token file" in str(err.value)
    assert "s3cr3t" not in str(err.value) and ":pw@" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://host/repo.git", "unsupported URL scheme"),
        ("git://host/repo.git", "unsupported URL scheme"),
        ("https:///repo.git", "no host"),
        ("https://host", "no repository path"),
        ("https://host/", "no repository path"),
        ("file://otherhost/srv/repo.git", "with a host"),
        ("https://host/repo.git\nfoo", "control characters"),
    ],
)
def test_bad_urls(text: str, fragment: str) -> None:
    with pytest.raises(SourceConfigError, match=fragment):
        parse_remote_url(text)
