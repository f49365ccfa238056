"""Request-target normalization (#17 finding 3): examples, what is refused, and properties."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_runtime.config.paths import PathError, normalize_path, normalize_target

EXAMPLES = [
    ("/", "/"),
    ("/admin", "/admin"),
    # the bypasses of a DENY on /admin* (#17)
    ("//admin", "/admin"),
    ("/./admin", "/admin"),
    ("/%61dmin", "/admin"),
    ("/x/../admin", "/admin"),
    ("/%2e/admin", "/admin"),
    ("/%2E%2E/admin", "/admin"),
    ("/x/%2e%2e/admin", "/admin"),
    ("/;/admin", "/;/admin"),  # as Envoy: ';' is an ordinary character
    # RFC 3986 5.2.4
    ("/a/b/c/./../../g", "/a/g"),
    ("/a/b/..", "/a/"),
    ("/a/.", "/a/"),
    ("/..", "/"),
    ("/../../x", "/x"),
    ("/a//../b", "/a/b"),
    ("/a///b//", "/a/b/"),
    ("/.well-known/x", "/.well-known/x"),
    ("/a/..b/c.", "/a/..b/c."),
    # percent-encoding: unreserved decoded once, the rest kept upper-case
    ("/%7e%5F%2d%30", "/~_-0"),
    ("/a%20b", "/a%20b"),
    ("/a%3bb", "/a%3Bb"),
    ("/%2561dmin", "/%2561dmin"),  # no double decoding
    ("/a\\b", "/a/b"),
    ("/\\admin", "/admin"),
    ("/caf\u00e9", "/caf%C3%A9"),
    ("/a\"b<c>", "/a%22b%3Cc%3E"),
]


@pytest.mark.parametrize(("raw", "normalized"), EXAMPLES)
def test_normalize_path_examples(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize("raw", [
    "/a%2fb", "/a%2Fb", "/a%5cb", "/a%5Cb", "/a%00b", "/a\x00b", "/a%zz", "/a%2", "/a%",
    "/a b", "/a\tb", "/a#frag", "admin", "", "*",
])
def test_refused_paths(raw: str) -> None:
    with pytest.raises(PathError):
        normalize_target(raw)


def test_normalize_target_forms() -> None:
    assert normalize_target("/a/../b?x=%2e%2e/..//") == (None, "/b?x=%2e%2e/..//")  # query as is
    assert normalize_target("http://frontend.shop/admin") == ("frontend.shop", "/admin")
    assert normalize_target("HTTPS://frontend.shop:8443//x/./y?q") == ("frontend.shop:8443", "/x/y?q")
    assert normalize_target("http://frontend.shop") == ("frontend.shop", "/")
    assert normalize_target("http://frontend.shop?q=1") == ("frontend.shop", "/?q=1")
    for bad in ("http:///admin", "http://user@frontend.shop/admin", "ftp://h/x", "frontend.shop:80",
                "/x?a#b"):
        with pytest.raises(PathError):
            normalize_target(bad)


_UNRESERVED = set(string.ascii_letters + string.digits + "-._~")
_PIECES = st.sampled_from([
    "/", "//", ".", "..", "/./", "/../", "a", "admin", "%2e", "%2E", "%2e%2e", "%61", "%41", "%25",
    "%2f", "%5c", "%00", "%", "%z", "\\", ";", "~", "%7e", "%20", " ", "\u00e9", "\udce9", "?", "#",
    "-", "_", ":", "@", "!", "$", "&", "'", "(", ")", "*", "+", ",", "=",
])


@settings(max_examples=1500, deadline=None)
@given(st.lists(_PIECES, max_size=14))
def test_normalization_properties(pieces: list[str]) -> None:
    raw = "/" + "".join(pieces)
    raw = raw.split("?")[0]
    try:
        out = normalize_path(raw)
    except PathError:
        return
    assert out.startswith("/")
    assert out.isascii()
    assert "//" not in out
    assert "/./" not in out and "/../" not in out
    assert not out.endswith("/.") and not out.endswith("/..")
    assert "\\" not in out
    assert normalize_path(out) == out  # idempotent
    # no escape of an unreserved character survives, and escapes are upper-case
    for i in range(len(out)):
        if out[i] == "%":
            hx = out[i + 1:i + 3]
            assert hx == hx.upper()
            assert chr(int(hx, 16)) not in _UNRESERVED
