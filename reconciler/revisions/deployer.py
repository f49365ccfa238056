"""The deploy step, behind one small interface: `AllAtOnceDeployer` (every affected proxy
gets the new snapshot at once; the deploy waits for each connected proxy's ACK or NACK) and
`reconciler.revisions.canary.CanaryDeployer` (stage by stage, judged, rolled back).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from reconciler.fleet import DesiredSnapshot, FleetServer
from reconciler.language.model import RolloutPolicy
from reconciler.revisions.decisions import DeployTargets, DeployVerdict, deploy_verdict


@dataclass(frozen=True)
class DeployRequest:
    """What to deploy: each target proxy's snapshot (`snapshots` by proxy id), and which of
    them are connected (`targets.wait_for`) and must answer.

    For a canary rollout also: what each proxy ran before (`previous`, by proxy id; absent:
    it had nothing), each proxy's service (`services`, "name.namespace"), the RolloutPolicy
    covering each service (`policies`), the commit it replaces, and `strategy`, an override
    for this one deploy ("all-at-once" for `meshcd rollback --fast`)."""

    revision_id: int
    commit: str
    targets: DeployTargets
    snapshots: Mapping[str, DesiredSnapshot]
    previous: Mapping[str, DesiredSnapshot] = field(default_factory=dict)
    services: Mapping[str, str] = field(default_factory=dict)
    policies: Mapping[str, RolloutPolicy | None] = field(default_factory=dict)
    previous_commit: str | None = None
    strategy: str | None = None


class Deployer(Protocol):
    async def deploy(self, request: DeployRequest) -> DeployVerdict:
        """Put the snapshots on the proxies and say how it went. Must not raise for proxies
        that refuse or time out: that is a FAILED verdict."""
        ...

    @property
    def hello_gets_new(self) -> bool:
        """Whether a proxy that connects during a deploy gets the new revision at once (all at
        once) or stays on the deployed one until a stage picks it (canary)."""
        ...

    def new_commit(self, commit: str) -> bool:
        """A newer valid commit waits while `deploy` runs (a canary rollout hears it as
        NewCommit, also when it is told before its engine exists). False: nobody listens."""
        ...

    async def operator(self, action: str, actor: str, reason: str = "") -> tuple[bool, str]:
        """An operator command for the running rollout: (accepted, message)."""
        ...


class AllAtOnceDeployer:
    hello_gets_new = True

    def __init__(self, fleet: FleetServer, *, timeout: float = 60.0) -> None:
        self.fleet = fleet
        self.timeout = timeout

    def new_commit(self, commit: str) -> bool:
        return False  # an all-at-once deploy is not interrupted: the commit goes next

    async def operator(self, action: str, actor: str, reason: str = "") -> tuple[bool, str]:
        return False, ("no rollout in progress: this controller deploys all at once "
                       "(deploy.strategy: all-at-once)")

    async def deploy(self, request: DeployRequest) -> DeployVerdict:
        self.fleet.set_desired(request.snapshots)
        got = await self.fleet.wait_for_acks(
            {proxy_id: request.targets.assign[proxy_id] for proxy_id in request.targets.wait_for},
            self.timeout)
        return deploy_verdict({p: (o.status, o.error) for p, o in got.items()})
