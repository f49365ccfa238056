"""The pure decisions: roles, CSRF, paging, chart geometry, folding, badge, actions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.audit import Anchor, VerifyResult
from reconciler.auth import Principal, Role, allows, csrf_matches, parse_role
from reconciler.pages.actions import available_actions
from reconciler.pages.chain_status import ChainVerdict, badge_of
from reconciler.pages.chart import downsample, line_chart, nice_max
from reconciler.pages.folding import fold_text, summarise_blast
from reconciler.pages.paging import parse_audit_query, parse_positive
from reconciler.pages.readmodel import Action, Overview, RolloutView

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_pages_roles_are_ordered() -> None:
    assert allows(Role.ADMIN, Role.OPERATOR) and allows(Role.OPERATOR, Role.VIEWER)
    assert not allows(Role.VIEWER, Role.OPERATOR) and not allows(Role.OPERATOR, Role.ADMIN)
    assert parse_role(" Operator ") is Role.OPERATOR
    with pytest.raises(ValueError):
        parse_role("root")
    p = Principal("ana", Role.OPERATOR, "0123456789abcdef")
    assert p.can_act and not p.can_admin and p.actor == "token:ana#01234567"


def test_pages_csrf_check() -> None:
    assert csrf_matches("abc123", "abc123")
    for bad in (None, "", "abc124", "abc12", "abc123 ", "x" * 500):
        assert not csrf_matches("abc123", bad)
    assert not csrf_matches("", "")


def test_pages_audit_query_parsing_and_links() -> None:
    query, errors = parse_audit_query(
        {
            "kind": "rollout.abort",
            "since": "2026-11-25T10:00",
            "until": "2026-11-25T11:00:30Z",
            "before": "500",
        }
    )
    assert errors == []
    assert query.since == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert query.until == datetime(2026, 11, 25, 11, 0, 30, tzinfo=UTC)
    assert query.before == 500
    link = query.link(before=450)
    assert (
        "kind=rollout.abort" in link
        and "before=450" in link
        and "since=2026-11-25T10%3A00%3A00" in link
    )
    assert "before" not in query.link()
    bad, errors = parse_audit_query({"since": "yesterday", "before": "-3", "actor": "a\x00b"})
    assert bad.since is None and bad.before is None and bad.actor is None and len(errors) == 3
    _, errors = parse_audit_query({"since": "2026-11-25T12:00", "until": "2026-11-25T11:00"})
    assert errors == ["since must be earlier than until"]
    assert parse_positive("12", default=0, maximum=10) == 10
    assert parse_positive("x", default=3, maximum=10) == 3


def test_pages_chart_geometry() -> None:
    assert nice_max(0.37) == 0.5 and nice_max(3) == 5 and nice_max(100) == 100 and nice_max(0) == 1
    assert nice_max(101) == 200
    canary = [(t, float(t)) for t in range(11)]
    baseline = [(t, 1.0) for t in range(11)]
    chart = line_chart("Errors", "%", canary, baseline, threshold=5.0, width=200, height=100)
    first, *_, last = chart.canary.split(" ")
    # t=0 at the plot's left edge and bottom; t=10 (value 10 = axis top) at the right top.
    assert first == f"{chart.plot_left}.0,{chart.plot_top + chart.plot_height}.0"
    assert last == f"{chart.plot_left + chart.plot_width}.0,{chart.plot_top}.0"
    assert chart.threshold_y == chart.plot_top + chart.plot_height / 2
    assert chart.y_ticks[-1][1] == "10.0%" and chart.canary_last == "10.0%"
    empty = line_chart("Errors", "%", [], [])
    assert empty.empty and empty.canary == ""


def test_pages_downsample_keeps_spikes() -> None:
    points = [(t, 0.0) for t in range(10_000)]
    points[7777] = (7777, 99.0)
    reduced = downsample(points, 100)
    assert len(reduced) == 100 and max(v for _, v in reduced) == 99.0
    assert downsample(points[:5], 100) == points[:5]


def test_pages_fold_and_blast_summary() -> None:
    small = fold_text("a\nb\n", 100)
    assert not small.folded and small.shown == "a\nb\n"
    big = fold_text("".join(f"line {i}\n" for i in range(1000)), 100)
    assert big.folded and big.total_lines == 1000 and len(big.shown.encode()) <= 100
    assert big.shown.endswith("\n") and big.shown_lines == big.shown.count("\n")
    blast = summarise_blast([(f"s{i}", i) for i in range(1, 10_001)], top=25)
    assert blast.summarised and blast.shown[0] == ("s10000", 10_000) and len(blast.shown) == 25
    assert blast.other_services == 9975 and blast.total_proxies == sum(range(1, 10_001))


def test_pages_badge_words() -> None:
    ok = VerifyResult(True, 42, None, None, 42, Anchor(42, "a" * 64))
    assert badge_of(ChainVerdict(ok, NOW, True, False)).text == "Chain verified up to seq 42"
    broken = VerifyResult(False, 6, 7, "record 7 does not match its hash: it was edited", 7)
    badge = badge_of(ChainVerdict(broken, NOW, True, False))
    assert (
        badge.level == "broken"
        and badge.text == "Chain broken at seq 7"
        and "edited" in badge.detail
    )
    assert badge_of(ChainVerdict(None, None, False, True)).level == "unknown"


def _rollout(state: str) -> RolloutView:
    return RolloutView(1, "c" * 40, state, 0, (), NOW, NOW)


def test_pages_available_actions() -> None:
    def overview(rollout: RolloutView | None) -> Overview:
        return Overview(None, rollout, {}, None, False, None)

    assert available_actions(overview(None)) == [Action.ROLLBACK]
    assert Action.PAUSE in available_actions(overview(_rollout("running")))
    paused = available_actions(overview(_rollout("paused")))
    assert Action.RESUME in paused and Action.PAUSE not in paused


def test_pages_convert_controller_shapes() -> None:
    from reconciler.pages.convert import access_changes, findings, proxy_row, revision_row

    row = revision_row(
        {
            "id": 7,
            "commit": "a" * 40,
            "author": "ana",
            "message": "m",
            "trigger": "webhook",
            "status": "deployed",
            "detectedAt": "2026-11-25T12:00:00Z",
            "signature": {
                "verdict": {"kind": "verified", "principal": "ana@x", "fingerprint": "SHA256:zz"}
            },
        }
    )
    assert row.outcome == "deployed" and row.detected_at == NOW
    assert row.signature == "verified: ana@x (SHA256:zz)"
    assert revision_row({"id": 1, "signature": {}}).signature == "not checked"
    bad = revision_row(
        {"id": 2, "signature": {"verdict": {"kind": "bad_signature", "reason": "forged"}}}
    )
    assert bad.signature == "bad signature: forged"
    (f,) = findings(
        [
            {
                "code": "MCD100",
                "severity": "error",
                "message": "x",
                "file": "a.yaml",
                "line": 3,
                "column": 1,
            }
        ]
    )
    assert (f.file, f.line, f.severity) == ("a.yaml", 3, "error")
    proxy = proxy_row(
        {
            "proxyId": "p1",
            "service": "web",
            "ackedVersion": None,
            "desiredVersion": "v2",
            "state": "STALE",
            "lastSeen": "2026-11-25T12:00:00+00:00",
            "lastError": None,
        }
    )
    assert proxy.version == "v2" and proxy.last_seen == NOW and proxy.state == "STALE"
    changes = access_changes(
        {"granted": [{"from": "web", "to": "payments", "method": "POST"}], "revoked": ["cart->db"]}
    )
    assert [(c.source, c.destination, c.change, c.detail) for c in changes] == [
        ("web", "payments", "now allowed", "method=POST"),
        ("cart->db", "", "now denied", ""),
    ]
