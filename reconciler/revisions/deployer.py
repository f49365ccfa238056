"""The deploy step, behind one small interface so the canary engine (#6) can replace it.

`AllAtOnceDeployer` is this issue's deploy: every affected proxy gets the new snapshot at
once through the fleet server, and the deploy waits for each connected proxy's ACK or NACK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from reconciler.fleet import DesiredSnapshot, FleetServer
from reconciler.revisions.decisions import DeployTargets, DeployVerdict, deploy_verdict


@dataclass(frozen=True)
class DeployRequest:
    """What to deploy: each target proxy's snapshot (`snapshots` by proxy id), and which of
    them are connected (`targets.wait_for`) and must answer."""

    revision_id: int
    commit: str
    targets: DeployTargets
    snapshots: Mapping[str, DesiredSnapshot]


class Deployer(Protocol):
    async def deploy(self, request: DeployRequest) -> DeployVerdict:
        """Put the snapshots on the proxies and say how it went. Must not raise for proxies
        that refuse or time out: that is a FAILED verdict."""
        ...


class AllAtOnceDeployer:
    def __init__(self, fleet: FleetServer, *, timeout: float = 60.0) -> None:
        self.fleet = fleet
        self.timeout = timeout

    async def deploy(self, request: DeployRequest) -> DeployVerdict:
        self.fleet.set_desired(request.snapshots)
        # Group by version: wait_acked takes one version at a time.
        by_version: dict[str, list[str]] = {}
        for proxy_id in request.targets.wait_for:
            by_version.setdefault(request.targets.assign[proxy_id], []).append(proxy_id)
        waits = [self.fleet.wait_acked(ids, version, self.timeout)
                 for version, ids in by_version.items()]
        outcomes: dict[str, tuple[str, str | None]] = {}
        for got in await asyncio.gather(*waits):
            for proxy_id, outcome in got.items():
                outcomes[proxy_id] = (outcome.status, outcome.error)
        return deploy_verdict(outcomes)
