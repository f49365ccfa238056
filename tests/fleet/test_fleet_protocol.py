"""The wire messages: round trips, and strict refusal of everything else."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_runtime.protocol.canonical import compute_version
from proxy_runtime.protocol.fleet import (
    MAX_TO_CONTROLLER_BYTES,
    Ack,
    Certificate,
    Csr,
    Error,
    Hello,
    Nack,
    ProtocolError,
    Snapshot,
    Stats,
    decode_to_controller,
    decode_to_proxy,
    encode,
    encode_snapshot,
)

TO_CONTROLLER = [
    Hello("web-1", "web", "shop", {"track": "canary"}, "ab" * 32),
    Hello("web-1", "web", "shop", {}, None),
    Ack("1.2", "v"),
    Nack("1.2", "v", "bind failed"),
    Stats([{"second": 5, "requests": {"2xx": 1}}]),
    Csr("-----BEGIN CERTIFICATE REQUEST-----\n..."),
]
TO_PROXY = [
    Snapshot("1.1", 3, "v", "rev", {"telemetry": {}}),
    Certificate("chain", "bundle"),
    Error("no"),
]


@pytest.mark.parametrize("msg", TO_CONTROLLER)
def test_round_trip_to_controller(msg: object) -> None:
    assert decode_to_controller(encode(msg)) == msg  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="unexpected message type"):
        decode_to_proxy(encode(msg))  # type: ignore[arg-type]


@pytest.mark.parametrize("msg", TO_PROXY)
def test_round_trip_to_proxy(msg: object) -> None:
    assert decode_to_proxy(encode(msg)) == msg  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        decode_to_controller(encode(msg))  # type: ignore[arg-type]


def test_wire_names_are_camel_case() -> None:
    doc = json.loads(encode(Hello("p", "s", "n", {}, None)))
    assert doc == {"type": "hello", "proxyId": "p", "service": "s", "namespace": "n",
                   "labels": {}, "runningVersion": None}
    assert json.loads(encode(Certificate("c", "b"))) == {"type": "certificate", "chainPem": "c",
                                                        "trustBundlePem": "b"}


def test_hello_labels_and_running_version_are_optional() -> None:
    msg = decode_to_controller('{"type":"hello","proxyId":"p","service":"s","namespace":"n"}')
    assert msg == Hello("p", "s", "n", {}, None)


def test_encode_snapshot_embeds_the_config_bytes_verbatim() -> None:
    config = {"telemetry": {"statsIntervalSeconds": 1.0}, "b": "é"}
    raw = json.dumps(config, ensure_ascii=False).encode()
    frame = encode_snapshot("n", 4, compute_version(config), "r\"1", raw)
    assert raw in frame
    msg = decode_to_proxy(frame)
    assert isinstance(msg, Snapshot)
    assert msg.config == config and msg.revision == 'r"1' and msg.epoch == 4
    assert compute_version(msg.config) == msg.version


@pytest.mark.parametrize("frame, match", [
    ("", "not valid JSON"),
    ("{", "not valid JSON"),
    ('{"type":"ack","nonce":"1","version":NaN}', "NaN"),
    ("null", "JSON object"),
    ('{"nonce":"1"}', "unexpected message type None"),
    ('{"type":"ack","nonce":"1"}', "missing field version"),
    ('{"type":"ack","nonce":"1","version":"v","extra":true}', "unknown field"),
    ('{"type":"ack","nonce":"","version":"v"}', "must not be empty"),
    ('{"type":"ack","nonce":1,"version":"v"}', "must be a string"),
    ('{"type":"hello","proxyId":"p","service":"s","namespace":"n","labels":[]}', "labels"),
    ('{"type":"hello","proxyId":"p","service":"s","namespace":"n","labels":{"a":1}}', "string"),
    ('{"type":"stats","windows":{}}', "windows"),
    ('{"type":"stats","windows":[{"second":"1"}]}', "integer"),
    ('{"type":"stats","windows":[' + ",".join(['{"second":1}'] * 121) + "]}", "at most 120"),
    ('{"type":"hello","proxyId":"' + "p" * 300 + '","service":"s","namespace":"n"}', "longer"),
])
def test_bad_frames_to_controller(frame: str, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_to_controller(frame)


@pytest.mark.parametrize("frame, match", [
    ('{"type":"snapshot","nonce":"1","epoch":-1,"version":"v","revision":"","config":{}}', "epoch"),
    ('{"type":"snapshot","nonce":"1","epoch":true,"version":"v","revision":"","config":{}}', "epoch"),
    ('{"type":"snapshot","nonce":"1","epoch":1,"version":"v","revision":"","config":[]}', "config"),
])
def test_bad_frames_to_proxy(frame: str, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_to_proxy(frame)


def test_oversized_frames_are_refused_before_parsing() -> None:
    big = '{"type":"csr","csrPem":"' + "a" * MAX_TO_CONTROLLER_BYTES + '"}'
    with pytest.raises(ProtocolError, match="over the limit"):
        decode_to_controller(big)
    with pytest.raises(ProtocolError, match="over the limit"):
        decode_to_controller(big.encode())


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                              max_leaves=12).map(json.dumps)))
def test_arbitrary_input_only_ever_raises_protocol_error(frame: str | bytes) -> None:
    for decode in (decode_to_controller, decode_to_proxy):
        with contextlib.suppress(ProtocolError):
            decode(frame)
