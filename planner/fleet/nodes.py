"""What the fleet's lower layers need to know of it: online nodes and the control channel.

`NodeInfo` is an online node as announced on its retained resources topic. Profiling,
overhead probes and a deployment handle take a `FleetAccess` (anything with `control`,
`nodes()` and `undeploy()`, in practice `planner.fleet.client.Fleet`) so they depend on
this narrow view, not on the client module that builds on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from planner.fleet.control import Control


@dataclass(frozen=True)
class NodeInfo:
    """An online node as announced on its retained resources topic."""

    name: str
    board: str
    runtime: str
    runtime_version: str
    cores: int
    threads: int
    memory_budget_bytes: int
    speed_gflops: float
    data_endpoint: str
    service_endpoint: str
    resources: dict[str, Any]

    @classmethod
    def of(cls, name: str, r: dict[str, Any]) -> NodeInfo:
        return cls(name, r.get("board", ""), r.get("runtime", ""), r.get("runtime_version", ""),
                   int(r.get("cores", 0)), int(r.get("threads", 1)),
                   int(r.get("memory_budget_bytes", 0)), float(r.get("speed_gflops", 0.0)),
                   r.get("data_endpoint", ""), r.get("service_endpoint", ""), r)


class FleetAccess(Protocol):
    """The part of a fleet connection that profiling, probes and deployments use."""

    control: Control

    def nodes(self) -> list[NodeInfo]: ...

    def undeploy(self, name: str) -> dict[str, Any]: ...
