"""The pipeline's pure parts: the revision life cycle, the render fleet, deploy targets and
verdicts, superseding, recovery after a restart, summaries; and the settings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.controller.settings import Bind, SettingsError, build_settings
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from reconciler.revisions import (
    IllegalTransition,
    KnownProxy,
    Revision,
    RevisionStatus,
    check_transition,
    deploy_targets,
    deploy_verdict,
    recovery_plan,
    render_fleet,
    superseded_by,
    trigger_of,
)
from reconciler.revisions.decisions import plan_summary

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = RevisionStatus


def rev(i: int, status: RevisionStatus) -> Revision:
    return Revision(i, f"{i:040x}", "main", "a <a@x>", "m", "poll", status, T0, T0)


def test_life_cycle_allows_only_its_moves() -> None:
    for old, new in [(S.DETECTED, S.PLANNED), (S.DETECTED, S.INVALID), (S.PLANNED, S.DEPLOYING),
                     (S.PLANNED, S.SUPERSEDED), (S.DEPLOYING, S.DEPLOYED),
                     (S.DEPLOYING, S.FAILED), (S.DEPLOYED, S.REJECTED),
                     (S.DEPLOYING, S.REJECTED), (S.DEPLOYING, S.SUPERSEDED)]:
        check_transition(old, new)
    for old, new in [(S.DEPLOYED, S.DEPLOYING), (S.REJECTED, S.DEPLOYING),
                     (S.INVALID, S.PLANNED), (S.DETECTED, S.DEPLOYED), (S.FAILED, S.DEPLOYED),
                     (S.SUPERSEDED, S.PLANNED)]:
        with pytest.raises(IllegalTransition):
            check_transition(old, new)
    moved = rev(1, S.DETECTED).moved(S.PLANNED, T0, plan={"x": 1})
    assert moved.status is S.PLANNED and moved.plan == {"x": 1}
    with pytest.raises(IllegalTransition):
        moved.moved(S.DEPLOYED, T0)


def test_a_newer_commit_supersedes_only_what_has_not_started_deploying() -> None:
    queued = [rev(1, S.DETECTED), rev(2, S.PLANNED), rev(3, S.DEPLOYING), rev(4, S.DEPLOYED)]
    newest = rev(5, S.DETECTED)
    assert [r.id for r in superseded_by([*queued, newest], newest)] == [1, 2]


def test_recovery_resumes_the_newest_and_closes_the_rest() -> None:
    plan = recovery_plan([rev(7, S.DETECTED), rev(3, S.DEPLOYING), rev(5, S.PLANNED)])
    assert plan.resume is not None and plan.resume.id == 7
    assert [r.id for r in plan.supersede] == [3, 5]
    assert recovery_plan([]).resume is None


def test_deploy_verdict() -> None:
    ok = deploy_verdict({"a": ("acked", None), "b": ("acked", None)})
    assert ok.status is S.DEPLOYED and ok.acked == ("a", "b")
    bad = deploy_verdict({"a": ("acked", None), "b": ("nacked", "no such cluster"),
                          "c": ("timeout", None)})
    assert bad.status is S.FAILED and bad.nacked == {"b": "no such cluster"}
    assert bad.timed_out == ("c",) and "refused" in bad.reason and "in time" in bad.reason
    assert deploy_verdict({}).status is S.DEPLOYED  # nobody to wait for


def test_render_fleet_and_targets() -> None:
    model = validate(DirectorySource(str(ROOT / "repo_layout_example"))).model
    known = [KnownProxy("frontend.shop-0", "frontend", "shop", {"version": "v1"}, True),
             KnownProxy("cart.shop-1", "cart", "shop", {}, False),
             KnownProxy("k8s-pod-1", "catalog", "shop", {"version": "v2"}, True),
             KnownProxy("ghost-1", "ghost", "shop", {}, True)]
    fleet = render_fleet(model, known)
    static = fleet.get("frontend.shop-0")
    assert static is not None and static.ports is not None  # keeps its static ports
    pod = fleet.get("k8s-pod-1")
    assert pod is not None and pod.ports is None and dict(pod.labels) == {"version": "v2"}
    assert fleet.get("payments.shop-1") is not None  # never seen, still planned for
    versions = {p.id: f"v-{p.id}" for p in fleet if p.service.name != "ghost"}
    targets = deploy_targets(versions, known)
    assert targets.wait_for == ("frontend.shop-0", "k8s-pod-1")
    assert targets.absent == ("cart.shop-1",)
    assert "ghost-1" not in targets.assign  # not in this revision: keeps what it runs


def test_trigger_and_plan_summary() -> None:
    assert trigger_of(("poll", "webhook:github")) == "webhook"
    assert trigger_of(("manual:admin-token:ab",)) == "manual"
    assert trigger_of(("poll",)) == "poll"
    summary = plan_summary({"resources": [{"change": "changed", "kind": "Route",
                                           "namespace": "shop", "name": "cart"}],
                            "proxies": {"total": 3, "changed": 1},
                            "access": {"granted": [{}], "revoked": []}}, "x" * 30_000)
    assert summary["resources"] == {"changed": 1}
    assert summary["proxies"]["changed"] == 1 and summary["proxies"]["added"] == 0
    assert summary["access"] == {"granted": 1, "revoked": 0}
    assert len(summary["text"]) < 21_000 and summary["text"].endswith("[cut]\n")


def test_settings_from_file_and_env(tmp_path: Path) -> None:
    s = build_settings({"source": {"url": "./mesh.git", "poll_interval": 5},
                        "api": {"port": 0}, "webhooks": {"secrets": {"github": "file:gh.secret"}}},
                       {"MESHCD_BRANCH": "prod", "MESHCD_FLEET_BIND": "0.0.0.0:15999",
                        "MESHCD_WEBHOOK_SECRET_GITLAB": "env:GL"}, base_dir=tmp_path)
    assert s.repo_url == "./mesh.git" and s.branch == "prod" and s.poll_interval == 5
    assert s.api == Bind("127.0.0.1", 0) and s.fleet == Bind("0.0.0.0", 15999)
    assert s.data_dir == tmp_path / ".meshcd"
    assert s.webhook_secrets == {"github": f"file:{tmp_path}/gh.secret", "gitlab": "env:GL"}
    env_only = build_settings(None, {"MESHCD_REPO_URL": "https://git.example/x.git"})
    assert env_only.signature_mode == "off" and env_only.store_url is None


@pytest.mark.parametrize(("data", "message"), [
    (None, "repo URL is required"),
    ({"source": {"url": "x"}, "colour": "red"}, "unknown setting"),
    ({"source": {"url": "x", "poll_interval": 0}}, "outside"),
    ({"source": {"url": "x", "poll_interval": "soon"}}, "not a number"),
    ({"source": {"url": "x", "signature": {"mode": "maybe"}}}, "off, record or require"),
    ({"source": {"url": "x"}, "api": "no-port"}, "host:port"),
    ({"source": {"url": "x"}, "api": {"port": 70000}}, "outside"),
    ({"source": {"url": "x"}, "webhooks": {"secrets": {"github": "hunter2"}}}, "file:PATH"),
    ({"source": {"url": "x"}, "webhooks": {"secrets": {"svn": "env:X"}}}, "unknown setting"),
    ({"source": {"url": "x"}, "webhooks": {"max_body_bytes": 10**9}}, "outside"),
    ([1, 2], "expected a mapping"),
])
def test_bad_settings_are_refused(data: object, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        build_settings(data, {})


def test_rollback_target_choice() -> None:
    from reconciler.controller.commands import rollback_target
    from reconciler.errors import NotFound, RollbackRefused

    d1, d2, d3 = rev(1, S.DEPLOYED), rev(2, S.DEPLOYED), rev(3, S.DEPLOYED)
    newest_first = [d3, d2, d1]
    # asked for: it must exist and have been deployed
    with pytest.raises(NotFound):
        rollback_target(asked=None, asked_id=9, deployed=d3, running=False,
                        candidates=newest_first)
    with pytest.raises(RollbackRefused, match="never deployed"):
        rollback_target(asked=rev(4, S.INVALID), asked_id=4, deployed=d3, running=False,
                        candidates=newest_first)
    assert rollback_target(asked=d1, asked_id=1, deployed=d3, running=False,
                           candidates=[]) is d1
    # during a rollout: stay on the deployed one
    assert rollback_target(asked=None, asked_id=None, deployed=d3, running=True,
                           candidates=newest_first) is d3
    # else the newest deployed one before the deployed one, with another commit
    assert rollback_target(asked=None, asked_id=None, deployed=d3, running=False,
                           candidates=newest_first) is d2
    same_commit = Revision(2, d3.commit, "main", "a", "m", "rollback", S.DEPLOYED, T0, T0)
    assert rollback_target(asked=None, asked_id=None, deployed=d3, running=False,
                           candidates=[d3, same_commit, d1]) is d1
    with pytest.raises(RollbackRefused, match="nothing to roll back to"):
        rollback_target(asked=None, asked_id=None, deployed=d1, running=False,
                        candidates=[d1])
