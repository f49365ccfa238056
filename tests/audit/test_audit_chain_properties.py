"""Properties of the pure verifier: any single change to a chain is caught where it happens."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.audit import GENESIS_HASH, AuditEntry, AuditRecord, ChainVerifier, verify_records
from reconciler.audit.record import build_chain

T0 = datetime(2026, 1, 1, tzinfo=UTC)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=4,
)
entries = st.builds(
    AuditEntry,
    actor=st.sampled_from(["admin", "scheduler", "proxy:web-1"]),
    kind=st.sampled_from(["revision.detected", "deploy.ack", "proxy.connect"]),
    subject=st.text(
        st.characters(min_codepoint=32, max_codepoint=0x2FFF, blacklist_characters="\x7f"),
        max_size=12,
    ),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
chains = st.lists(entries, min_size=1, max_size=8).map(
    lambda es: build_chain(first_seq=1, prev_hash=GENESIS_HASH, entries=es, now=T0)
)


def mutate(record: AuditRecord, field: str) -> AuditRecord:
    value: Any = getattr(record, field)
    if field == "data":
        changed: Any = {**value, "tampered": True}
    elif field == "time":
        changed = (record.timestamp + timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif field in ("prev_hash", "hash"):
        changed = ("0" if value[0] != "0" else "1") + value[1:]
    else:
        changed = value + "x"
    return dataclasses.replace(record, **{field: changed})


@settings(max_examples=40, deadline=None)
@given(chains)
def test_an_untouched_chain_verifies(chain: list[AuditRecord]) -> None:
    result = verify_records(chain)
    assert (result.ok, result.verified_up_to, result.checked) == (True, len(chain), len(chain))


@settings(max_examples=80, deadline=None)
@given(chains, st.data())
def test_any_edited_field_is_caught_at_that_record(
    chain: list[AuditRecord], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(chain) - 1))
    field = data.draw(
        st.sampled_from(["actor", "kind", "subject", "data", "time", "prev_hash", "hash"])
    )
    tampered = [*chain[:index], mutate(chain[index], field), *chain[index + 1 :]]
    result = verify_records(tampered)
    assert not result.ok
    assert result.broken_at == index + 1
    assert result.verified_up_to == index


@settings(max_examples=50, deadline=None)
@given(chains.filter(lambda c: len(c) >= 2), st.data())
def test_any_deletion_or_swap_is_caught(chain: list[AuditRecord], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(chain) - 2))
    deleted = chain[:i] + chain[i + 1 :]
    assert verify_records(deleted).broken_at == i + 1
    swapped = [*chain[:i], chain[i + 1], chain[i], *chain[i + 2 :]]
    assert verify_records(swapped).broken_at == i + 1


@settings(max_examples=30, deadline=None)
@given(chains, st.integers(1, 5))
def test_feeding_in_any_batch_size_gives_the_same_verdict(
    chain: list[AuditRecord], size: int
) -> None:
    verifier = ChainVerifier()
    for start in range(0, len(chain), size):
        verifier.feed(chain[start : start + size])
    assert verifier.result() == verify_records(chain)
