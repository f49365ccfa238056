"""Fleet agent: the proxy's side of the fleet stream, and joining the fleet. See docs/fleet.md.

    sd = StateDir("/var/lib/meshcd-proxy")          # key, SVID, bundle, agent.json
    agent = FleetAgent(runtime, sd, fleet_url=url, proxy_id="web-1", service="web",
                       namespace="shop")
    await agent.run()                                # until agent.stop()

`core` holds the decisions (pure), `identity` the state dir, `bootstrap` the join request,
`client` the stream, `run` the managed proxy process, `cli` `meshcd proxy join`.
"""

from __future__ import annotations

from proxy_runtime.agent.client import FleetAgent
from proxy_runtime.agent.errors import (
    AgentError,
    BootstrapError,
    BootstrapRefused,
    IdentityError,
    TrustError,
)
from proxy_runtime.agent.identity import AgentState, Identity, StateDir

__all__ = [
    "AgentError",
    "AgentState",
    "BootstrapError",
    "BootstrapRefused",
    "FleetAgent",
    "Identity",
    "IdentityError",
    "StateDir",
    "TrustError",
]
