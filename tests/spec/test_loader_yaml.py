"""The positioned YAML loader: every bad input is a finding at the right place, never an
exception; good input becomes plain JSON-like data with a position for every field."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.language.findings import Location, Severity
from reconciler.language.loader import LoadLimits, load_yaml


def codes(data: bytes, limits: LoadLimits | None = None) -> list[tuple[str, int, int]]:
    _, found = load_yaml("f.yaml", data, limits)
    return [(f.code, f.location.line, f.location.column) for f in found]


def test_plain_values_and_types() -> None:
    docs, found = load_yaml(
        "f.yaml",
        b"s: text\nq: '8080'\ni: 8080\nf: 1.5\nb: true\nn: null\nl: [1, two]\nm: {a: {b: c}}\n",
    )
    assert found == []
    assert docs[0].data == {
        "s": "text", "q": "8080", "i": 8080, "f": 1.5, "b": True, "n": None,
        "l": [1, "two"], "m": {"a": {"b": "c"}},
    }
    assert type(docs[0].data["i"]) is int and type(docs[0].data["b"]) is bool


def test_positions_of_keys_and_values_are_one_based() -> None:
    text = (
        b"kind: Route\n"            # 1
        b"spec:\n"                  # 2
        b"  rules:\n"               # 3
        b"    - destinations:\n"    # 4
        b"        - service: a\n"   # 5
        b"          weight: 90\n"   # 6
        b"        - {service: b, weight: -5}\n"  # 7
    )
    docs, found = load_yaml("routes/r.yaml", text)
    assert found == []
    pos = docs[0].positions
    assert pos.loc(("kind",)) == Location("routes/r.yaml", 1, 1)
    assert pos.value_loc(("kind",)) == Location("routes/r.yaml", 1, 7)
    path = ("spec", "rules", 0, "destinations", 1, "weight")
    assert pos.loc(path) == Location("routes/r.yaml", 7, 24)
    assert pos.value_loc(path) == Location("routes/r.yaml", 7, 32)
    assert pos.loc(("spec", "rules", 0, "destinations", 0, "weight")) == Location("routes/r.yaml", 6, 11)
    # a sequence item is placed at its start
    assert pos.loc(("spec", "rules", 0, "destinations", 1)) == Location("routes/r.yaml", 7, 11)
    # a path that does not exist falls back to its nearest ancestor
    assert pos.loc(("spec", "rules", 0, "destinations", 1, "nope", 3)) == pos.loc(path[:-1])


def test_multi_document_files_keep_their_index_and_skip_empty_documents() -> None:
    docs, found = load_yaml("f.yaml", b"---\na: 1\n---\n---\n# only a comment\n---\nb: 2\n")
    assert found == []
    assert [(d.index, d.data) for d in docs] == [(0, {"a": 1}), (3, {"b": 2})]
    assert docs[1].location.line == 7


def test_duplicate_key_is_reported_at_the_second_key() -> None:
    assert codes(b"a: 1\nb:\n  c: 1\n  c: 2\n") == [("MCD002", 4, 3)]
    _, found = load_yaml("f.yaml", b"a: 1\na: 2\n")
    assert "first at line 1" in found[0].message


def test_duplicate_key_drops_only_its_document() -> None:
    docs, found = load_yaml("f.yaml", b"a: 1\na: 2\n---\nb: 1\n")
    assert [d.data for d in docs] == [{"b": 1}]
    assert [f.code for f in found] == ["MCD002"]


def test_billion_laughs_is_stopped_by_the_node_budget_quickly() -> None:
    lines = [b"a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        prev = f"*a{i - 1}".encode()
        lines.append(f"a{i}: &a{i} [".encode() + b", ".join([prev] * 10) + b"]")
    start = time.process_time()
    docs, found = load_yaml("bomb.yaml", b"\n".join(lines) + b"\n")
    assert time.process_time() - start < 5  # a generous bound: the unbounded load is 10^10 nodes
    assert docs == []
    assert [f.code for f in found] == ["MCD003"]


def test_aliases_within_the_budget_are_expanded() -> None:
    docs, found = load_yaml("f.yaml", b"base: &b {x: 1}\none: *b\ntwo: *b\n")
    assert found == []
    assert docs[0].data == {"base": {"x": 1}, "one": {"x": 1}, "two": {"x": 1}}


def test_node_budget_is_configurable() -> None:
    data = b"l: [" + b", ".join([b"1"] * 50) + b"]\n"
    assert codes(data, LoadLimits(node_budget=1000)) == []
    assert [c for c, _, _ in codes(data, LoadLimits(node_budget=20))] == ["MCD003"]


def test_merge_keys_merge_with_explicit_keys_winning() -> None:
    docs, found = load_yaml("f.yaml", b"base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n")
    assert found == []
    assert docs[0].data["m"] == {"x": 1, "y": 3}


def test_recursive_alias_does_not_hang() -> None:
    _, found = load_yaml("f.yaml", b"a: &a [*a]\n")
    assert [f.code for f in found] in (["MCD003"], ["MCD016"])


def test_deep_nesting_is_a_finding() -> None:
    assert [c for c, _, _ in codes(b"a: " + b"[" * 300 + b"]" * 300 + b"\n")] == ["MCD016"]
    assert [c for c, _, _ in codes(b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n")] == ["MCD001"]


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"a: 1\n b: 2\n", (2, 3)),                    # bad indentation
        (b"a:\n\tb: 1\n", (2, 1)),                      # tab indentation
        (b"a: 'open\nb: 2\n", (1, 4)),                  # unclosed quote: where it opened
        (b"a: [1, 2\n", (1, 4)),                        # unclosed bracket
        (b"a: b: c\n", (1, 5)),
        (b"a: \x07\n", (1, 4)),                         # a control character
    ],
)
def test_syntax_errors_name_their_place(data: bytes, where: tuple[int, int]) -> None:
    assert codes(data) == [("MCD001", *where)]


def test_syntax_error_keeps_the_documents_before_it() -> None:
    docs, found = load_yaml("f.yaml", b"a: 1\n---\nb: [\n")
    assert [d.data for d in docs] == [{"a": 1}]
    assert [f.code for f in found] == ["MCD001"]


def test_non_utf8_names_the_offending_byte() -> None:
    assert codes(b"a: 1\nb: caf\xe9\n") == [("MCD004", 2, 7)]


def test_utf16_and_nul_bytes_are_binary() -> None:
    assert [c for c, _, _ in codes("a: 1\n".encode("utf-16"))] == ["MCD005"]
    assert codes(b"a: 1\nb: \x00\n") == [("MCD005", 2, 4)]


def test_utf8_bom_is_accepted() -> None:
    docs, found = load_yaml("f.yaml", b"\xef\xbb\xbfa: 1\n")
    assert found == [] and docs[0].data == {"a": 1}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"a: 2024-01-01\n", "timestamp"),
        (b"a: !!binary aGVsbG8=\n", "binary"),
        (b"a: !!set {x, y}\n", "set"),
        (b"a: !!omap [{x: 1}]\n", "ordered map"),
        (b"a: !custom x\n", "'!custom'"),
        (b"a: .inf\n", "finite"),
        (b"a: .nan\n", "finite"),
        (b"8080: x\n", "not a string"),
        (b"on: x\n", "not a string"),       # YAML 1.1 reads `on` as true
        (b"? [a, b]\n: x\n", "not a string"),
        (b"~: x\n", "not a string"),
    ],
)
def test_values_json_cannot_hold(data: bytes, fragment: str) -> None:
    docs, found = load_yaml("f.yaml", data)
    assert docs == []
    assert [f.code for f in found] == ["MCD015"]
    assert fragment in found[0].message
    assert found[0].location.line == 1


def test_quoted_look_alikes_are_strings() -> None:
    docs, found = load_yaml("f.yaml", b"a: '2024-01-01'\n'on': 'yes'\n'8080': x\n")
    assert found == []
    assert docs[0].data == {"a": "2024-01-01", "on": "yes", "8080": "x"}


def test_document_count_limit_per_file() -> None:
    data = b"".join(b"---\na: %d\n" % i for i in range(5))
    docs, found = load_yaml("f.yaml", data, LoadLimits(max_documents_per_file=3))
    assert len(docs) == 3
    assert [(f.code, f.location.line) for f in found] == [("MCD008", 8)]


def test_findings_are_errors() -> None:
    _, found = load_yaml("f.yaml", b"a: 1\na: 2\n")
    assert found[0].severity is Severity.ERROR


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"# nothing\n", b"---\n", b"...\n", b"- 1\n", b"just a string\n", b"[}\n",
     b"a: *nope\n", b"&a a: 1\n", b"!!python/object:os.system x\n", b"a: !!int x\n",
     b"\xff\xfe\xfd", b"a: |\n  x\n b\n", b"%YAML 1.1\n---\na: 1\n", b"%FOO\n---\n"],
)
def test_odd_inputs_never_raise(data: bytes) -> None:
    docs, found = load_yaml("f.yaml", data)
    assert isinstance(docs, list) and isinstance(found, list)


_YAMLISH = st.text(
    alphabet=st.sampled_from([*"ab:-[]{}&*!<>'\"#|>?,.% \n\t0123456789~@`", "\u00e9", "\x85"]),
    max_size=120,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_YAMLISH)
def test_fuzz_yamlish_text_never_raises(text: str) -> None:
    from reconciler.language.sources import SourceFile, blob_id
    from reconciler.language.validate import process_file

    data = text.encode("utf-8")
    result = process_file(SourceFile("f.yaml", blob_id(data), data), LoadLimits(node_budget=5000))
    for f in result.findings:
        assert f.location.file == "f.yaml"
        assert f.location.line >= 0 and f.code.startswith("MCD")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_never_raise(data: bytes) -> None:
    docs, found = load_yaml("f.yaml", data, LoadLimits(node_budget=5000))
    assert isinstance(docs, list) and isinstance(found, list)


@pytest.mark.parametrize(
    "text", ["0", "7", "010", "0x1f", "0o17", "1_000", "1:30", "-5", "+3", "1e3", "1.5", "-.5",
             "123456789012345678901234567890", "yes", "No", "~", "Null", "\u0663"],
)
def test_scalars_read_as_pyyaml_safe_load_reads_them(text: str) -> None:
    import yaml

    docs, found = load_yaml("f.yaml", f"a: {text}\n".encode())
    assert found == []
    expected = yaml.safe_load(f"a: {text}\n")["a"]
    got = docs[0].data["a"]
    assert got == expected and type(got) is type(expected)
