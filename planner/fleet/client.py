"""`Fleet`: the entry point of the Python API (nodes, profile, deploy, deployments)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.errors import FleetError
from planner.fleet.control import Control
from planner.fleet.deployment import Deployment
from planner.fleet.nodes import NodeInfo
from planner.fleet.progress import OnProgress
from planner.fleet.record import Record
from planner.model.graph import ModelGraph, load_model
from planner.planning.plan import Plan, Stage

log = logging.getLogger(__name__)


class Fleet:
    """A connection to one fleet over MQTT; use `Fleet.connect(url)`."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self._deployments: list[Deployment] = []

    @classmethod
    def connect(cls, url: str, fleet: str = "default", timeout_s: float = 5.0) -> Fleet:
        """Connect to the broker; FleetError "broker unreachable: ..." if it cannot."""
        return cls(Control(url, fleet, timeout_s))

    def close(self) -> None:
        for d in self._deployments:
            d.close()
        self.control.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- nodes ----------------------------------------------------------------------
    def nodes(self) -> list[NodeInfo]:
        """Online nodes that announced their resources, by name."""
        return [NodeInfo.of(n, r) for n, r in self.control.online().items() if r]

    def node(self, name: str) -> NodeInfo:
        for n in self.nodes():
            if n.name == name:
                return n
        raise FleetError(f"unknown node {name!r} (online: "
                         f"{', '.join(n.name for n in self.nodes()) or 'none'})")

    def wait_for_nodes(self, count: int, timeout_s: float = 30.0) -> list[NodeInfo]:
        """Wait until at least `count` nodes are online; FleetError on time-out."""
        deadline = time.monotonic() + timeout_s
        while len(nodes := self.nodes()) < count:
            if time.monotonic() > deadline:
                raise FleetError(f"only {len(nodes)} of {count} node(s) online after "
                                 f"{timeout_s:.0f} s")
            time.sleep(0.05)
        return nodes

    # ---- deployments ----------------------------------------------------------------
    def deployments(self) -> list[str]:
        return sorted(self.control.records)

    def deployment(self, name: str, **client: Any) -> Deployment:
        """Attach to a running deployment by name (timeout_s, retries, window)."""
        deadline = time.monotonic() + 1.0  # a retained record may trail the SUBACK
        while (doc := self.control.record(name)) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if doc is None:
            raise FleetError(f"unknown deployment {name!r} (known: "
                             f"{', '.join(self.deployments()) or 'none'})")
        d = Deployment(self, Record.from_json(doc), **client)
        self._deployments.append(d)
        return d

    def profile(self, model: str | Path | bytes | ModelGraph, nodes: list[str] | None = None,
                **options: Any) -> Any:
        """Profile (cached) of the online nodes for this model; see planner.fleet.profiling."""
        from planner.fleet.profiling import profile_fleet

        return profile_fleet(self, load_model(model), nodes, **options)

    def deploy(self, model: str | Path | bytes | ModelGraph, name: str = "default",
               strategy: str = "auto", plan: Plan | None = None,
               stages: Sequence[Stage] | None = None,
               constraints: Any = None, profile: Any = None,
               on_progress: OnProgress | None = None,
               ready_timeout_s: float = 60.0, **client: Any) -> Deployment:
        """Plan, ship and start `model`; returns its handle.

        One path for every caller: the Plan given, else hand-written `stages` (a manual
        plan), else a plan made with `strategy` on the online nodes (profiled unless
        `profile` is given); then planner.fleet.deploy.deploy_plan ships exactly it.

        `ready_timeout_s` bounds the wait for each node's deploy reply; `client` options
        (timeout_s per attempt, retries, window) configure the returned handle.
        """
        from planner.fleet.deploy import deploy_plan

        graph = load_model(model)
        if plan is None and stages is not None:
            from planner.planning.plan import manual_plan

            plan = manual_plan(graph, stages)
        elif plan is None:
            from planner.fleet.fleetplan import plan_for_fleet

            plan = plan_for_fleet(self, graph, strategy, constraints, profile, on_progress)
        rec = deploy_plan(self.control, graph, plan, name, timeout_s=ready_timeout_s,
                          on_progress=on_progress)
        d = Deployment(self, rec, **client)
        self._deployments.append(d)
        return d

    def undeploy(self, name: str) -> dict[str, Any]:
        """Free deployment `name` on every node and clear its record."""
        from planner.fleet.deploy import undeploy

        for d in [d for d in self._deployments if d.name == name]:
            d.close()
        return undeploy(self.control, name)
