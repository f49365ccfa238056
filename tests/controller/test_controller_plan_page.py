"""The stored plan summary's page parts (blast radius, access changes, capped diff text),
from the pipeline's own `evaluate` over two real commits of the example repo, and what the
revision page makes of them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from plan_git import commit, example_files, new_repo

from reconciler.language.validate import ValidationCache
from reconciler.pages.convert import plan_parts
from reconciler.pages.folding import summarise_blast
from reconciler.revisions.decisions import (
    MAX_ACCESS_CHANGES,
    MAX_DIFF_TEXT,
    blast_radius,
    cap_text,
    plan_summary,
)
from reconciler.revisions.evaluate import Evaluated, evaluate

EDITS = {
    # cart: 90/10 -> 80/20 (the proxies calling cart change)
    "routes/cart.yaml": lambda t: t.replace("weight: 90}", "weight: 80}").replace(
        "weight: 10}", "weight: 20}"),
    # catalog: cart may now also GET /reviews/*
    "policies/catalog.yaml": lambda t: t.replace('paths: ["/products/*"]',
                                                 'paths: ["/products/*", "/reviews/*"]'),
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Evaluated, Evaluated]:
    repo = new_repo(tmp_path_factory.mktemp("plan") / "repo.git")
    files = example_files()
    base = commit(repo, files, "base")
    changed = {p: (EDITS[p](t) if p in EDITS else t) for p, t in files.items()}
    assert changed != files
    head = commit(repo, changed, "weights and a path")
    cache = ValidationCache()
    first = evaluate(repo, base, cache=cache, known=[], deployed=None)
    assert isinstance(first, Evaluated)
    second = evaluate(repo, head, cache=cache, known=[], deployed=first)
    assert isinstance(second, Evaluated)
    return first, second


def test_summary_keeps_its_keys_and_adds_the_page_parts(
        evaluated: tuple[Evaluated, Evaluated]) -> None:
    _, second = evaluated
    plan = second.plan
    json.dumps(plan)  # stored as JSON
    # The keys the pipeline audits, unchanged in type.
    assert isinstance(plan["resources"], dict) and plan["resources"]
    assert isinstance(plan["resourceNames"], list)
    assert set(plan["proxies"]) == {"total", "unchanged", "changed", "added", "removed"}
    assert plan["access"] == {"granted": 1, "revoked": 0}
    assert isinstance(plan["text"], str)
    # Blast radius: every service with a changed proxy, biggest first, summing to the
    # plan's changed proxies.
    blast = plan["blastRadius"]
    assert blast and all(isinstance(s, str) and n > 0 for s, n in blast)
    assert [n for _, n in blast] == sorted((n for _, n in blast), reverse=True)
    assert sum(n for _, n in blast) == plan["proxies"]["changed"] + plan["proxies"]["added"] \
        + plan["proxies"]["removed"]
    # The access flip: cart may now GET /reviews/* on catalog.
    [flip] = plan["accessChanges"]
    assert flip["granted"] is True and flip["destination"].startswith("catalog")
    assert plan["accessChangesTruncated"] == 0
    assert "[cut" not in plan["diffText"] and "cart" in plan["diffText"]


def test_revision_page_parts_from_the_stored_summary(
        evaluated: tuple[Evaluated, Evaluated]) -> None:
    _, second = evaluated
    stored = json.loads(json.dumps(second.plan))  # as the revision store gives it back
    parts = plan_parts(stored)
    assert parts.diff == stored["diffText"]
    assert list(parts.blast_radius) == [tuple(x) for x in stored["blastRadius"]]
    [change] = parts.access
    assert change.change == "now allowed"
    assert "cart" in change.source
    assert change.destination.startswith("catalog") and ":" in change.destination
    assert "/reviews" in change.detail and "->" in change.detail
    assert parts.access_more == 0


def test_first_revision_touches_every_proxy(evaluated: tuple[Evaluated, Evaluated]) -> None:
    first, _ = evaluated
    blast = first.plan["blastRadius"]
    assert sum(n for _, n in blast) == first.plan["proxies"]["total"] > 0


def test_caps_on_access_changes_and_text() -> None:
    flips = [{"destination": f"svc{i}.shop", "port": 80, "method": "*", "path": "*",
              "host": "*", "sources": ["ns/shop/sa/a"], "source_count": 1, "granted": True,
              "before": "denied", "after": "allowed"} for i in range(MAX_ACCESS_CHANGES + 7)]
    text = "".join(f"line {i} " + "x" * 90 + "\n" for i in range(3000))  # ~300 KB
    plan: dict[str, Any] = {"resources": [], "proxies": {"services": []},
                            "access": {"granted": flips, "revoked": []}}
    summary = plan_summary(plan, text)
    assert len(summary["accessChanges"]) == MAX_ACCESS_CHANGES
    assert summary["accessChangesTruncated"] == 7
    assert summary["access"] == {"granted": MAX_ACCESS_CHANGES + 7, "revoked": 0}
    diff = summary["diffText"]
    assert len(diff) <= MAX_DIFF_TEXT + 100 and diff.endswith("characters]\n")
    body, tail = diff.rsplit("[cut: ", 1)
    assert text.startswith(body) and body.endswith("\n")  # whole lines only
    assert tail.startswith(f"{text[len(body):].count(chr(10)) + 1} more lines")
    assert cap_text("short\n", 100) == "short\n"
    assert plan_parts(summary).access_more == 7


def test_blast_radius_of_10000_proxies_is_summarised_on_the_page() -> None:
    services = [{"service": f"svc{i:03d}.shop", "proxies": 100, "added": 0,
                 "changed": 100 - (i % 7), "removed": 0} for i in range(100)]
    services.append({"service": "quiet.shop", "proxies": 5, "added": 0, "changed": 0,
                     "removed": 0})
    blast = blast_radius(services)
    assert len(blast) == 100 and all(n > 0 for _, n in blast)
    assert blast[0][1] == 100 and blast[-1][1] == 94
    summary = summarise_blast([(s, n) for s, n in blast])
    assert len(summary.shown) == 25 and summary.other_services == 75
    assert summary.total_proxies == sum(n for _, n in blast)
