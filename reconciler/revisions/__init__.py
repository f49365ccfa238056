"""The revision pipeline: each commit of the watched branch through signature policy,
validation, render, plan and deploy; persisted (table `revisions`) and audited.
See docs/controller.md.

    store = RevisionStore(engine)                      # same database as the audit
    pipeline = Pipeline(store=store, audit=audit, open_repo=mirror.open_repository,
                        known_proxies=..., deployer=AllAtOnceDeployer(fleet), clock=clock,
                        branch="main", trust_domain=ca.trust_domain)
    await pipeline.restore(); pipeline.start()          # on the loop
    pipeline.observe(observe_branch(...), outcome.reasons)  # from the fetch thread

Pure parts: `queue` (the `RevisionQueue`: events in, commands out; it decides), `model`
(statuses and their moves), `decisions` (fleet, targets, verdicts, superseding, recovery).
`pipeline` is the shell that runs the queue's commands; the deploy step is the `Deployer`
protocol (all at once here, canary in `canary`).
"""

from __future__ import annotations

from reconciler.revisions.decisions import (
    DeployTargets,
    DeployVerdict,
    KnownProxy,
    deploy_targets,
    deploy_verdict,
    recovery_plan,
    render_fleet,
    superseded_by,
)
from reconciler.revisions.deployer import AllAtOnceDeployer, Deployer, DeployRequest
from reconciler.revisions.evaluate import Evaluated, Invalid, evaluate
from reconciler.revisions.model import (
    TERMINAL,
    IllegalTransition,
    Revision,
    RevisionNotFound,
    RevisionStatus,
    check_transition,
)
from reconciler.revisions.pipeline import Pipeline
from reconciler.revisions.queue import RevisionQueue, trigger_of
from reconciler.revisions.store import RevisionStore

__all__ = [
    "TERMINAL",
    "AllAtOnceDeployer",
    "DeployRequest",
    "DeployTargets",
    "DeployVerdict",
    "Deployer",
    "Evaluated",
    "IllegalTransition",
    "Invalid",
    "KnownProxy",
    "Pipeline",
    "Revision",
    "RevisionNotFound",
    "RevisionQueue",
    "RevisionStatus",
    "RevisionStore",
    "check_transition",
    "deploy_targets",
    "deploy_verdict",
    "evaluate",
    "recovery_plan",
    "render_fleet",
    "superseded_by",
    "trigger_of",
]
