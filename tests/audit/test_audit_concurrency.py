"""Several writers never fork the chain: threads, separate engines, separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from reconciler.audit import AppendConflict, AuditEntry, AuditLog
from reconciler.audit import log as log_module

REPO = Path(__file__).resolve().parents[2]


def run_threads(count: int, target: Any) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def assert_one_unbroken_chain(log: AuditLog, expected: int) -> None:
    assert log.count() == expected
    assert [r.seq for r in log.iter_records()] == list(range(1, expected + 1))
    result = log.verify()
    assert (result.ok, result.verified_up_to) == (True, expected)


def test_threads_sharing_one_log(log: AuditLog, clock: Any) -> None:
    def write(index: int) -> None:
        for i in range(25):
            if i % 5 == 0:
                log.append_many(
                    [AuditEntry(f"t{index}", "x.burst", "s", {"i": i})] * 3, now=clock.now
                )
            else:
                log.append(f"t{index}", "x.one", "s", {"i": i}, now=clock.now)

    run_threads(6, write)
    assert_one_unbroken_chain(log, 6 * (20 + 5 * 3))
    assert Counter(r.actor for r in log.iter_records()) == {f"t{i}": 35 for i in range(6)}


def test_separate_engines_like_separate_controllers(db_url: str, clock: Any) -> None:
    logs = [AuditLog.open(db_url) for _ in range(4)]
    try:
        run_threads(
            4,
            lambda i: [
                logs[i].append(f"c{i}", "x.y", "s", {"n": n}, now=clock.now) for n in range(30)
            ],
        )
        assert_one_unbroken_chain(logs[0], 120)
    finally:
        for each in logs:
            each.close()


WORKER = """
import sys
from datetime import UTC, datetime
from reconciler.audit import AuditLog
log = AuditLog.open(sys.argv[1])
for n in range(int(sys.argv[3])):
    log.append(sys.argv[2], "x.proc", "s", {"n": n}, now=datetime.now(UTC))
log.close()
"""


def test_separate_processes(db_url: str) -> None:
    AuditLog.open(db_url).close()  # create the schema first, so the race is on appends
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_url, f"p{i}", "60"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    log = AuditLog.open(db_url)
    try:
        assert_one_unbroken_chain(log, 180)
        assert Counter(r.actor for r in log.iter_records()) == {"p0": 60, "p1": 60, "p2": 60}
    finally:
        log.close()


def test_a_lost_race_for_the_next_seq_is_retried(
    log: AuditLog, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate a writer that read the tail before another one committed: the first attempt
    # sees a stale head, its insert hits the primary key, and the append retries.
    for n in range(3):
        log.append("a", "x.y", "s", {"n": n}, now=clock.now)
    real_tail = log_module._tail_link
    calls = {"n": 0}

    def stale_once(connection: Any) -> Any:
        calls["n"] += 1
        tail = real_tail(connection)
        if calls["n"] == 1 and tail is not None:
            before = log.get(tail[0] - 1)
            return before.seq, before.hash, before.time
        return tail

    monkeypatch.setattr(log_module, "_tail_link", stale_once)
    record = log.append("b", "x.y", "s", {}, now=clock.now)
    assert calls["n"] == 2
    assert record.seq == 4
    assert log.get(4).prev_hash == log.get(3).hash
    assert_one_unbroken_chain(log, 4)


def test_an_append_that_keeps_losing_gives_up_with_a_temporary_error(
    log: AuditLog, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.append("a", "x.y", "s", {}, now=clock.now)
    monkeypatch.setattr(log_module, "_tail_link", lambda connection: None)  # always "empty"
    with pytest.raises(AppendConflict) as caught:
        log.append("b", "x.y", "s", {}, now=clock.now)
    assert caught.value.temporary
    monkeypatch.undo()
    assert_one_unbroken_chain(log, 1)
