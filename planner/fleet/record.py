"""The deployment record: retained JSON at `tilefleet/<fleet>/deployments/<name>`.

It holds everything another process needs to use or tear down a deployment: the epoch,
the model's input/output tensors, the layout and plan, which node runs which stage, the
nodes' endpoints, the client's entry routes and the result tensors (with their piece
counts). Version 1; unknown keys are ignored so it can grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.wire.messages import Route
from planner.errors import FleetError

RECORD_VERSION = 1


@dataclass
class Record:
    """A deployment record (see the module docstring)."""

    name: str
    fleet: str
    epoch: int
    model: dict[str, Any]  # sha256, file, inputs [T], outputs [T]; T = name, shape, dtype
    layout: list[dict[str, Any]]
    nodes: dict[str, dict[str, Any]]  # node -> data_endpoint, service_endpoint, board
    stages: dict[str, dict[str, Any]]  # stage id -> node, part, ops, tile
    entry: list[dict[str, Any]]  # client routes: tensor, to, stage, region
    results: dict[str, dict[str, Any]]  # output name -> shape, dtype, pieces
    strategy: str = ""
    plan: dict[str, Any] | None = None
    predicted: dict[str, Any] | None = None
    created: float = 0.0
    updated: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def entry_routes(self) -> tuple[Route, ...]:
        return tuple(Route(r["tensor"], r["to"], r.get("stage", ""), r.get("name", ""),
                           tuple(r["region"]) if r.get("region") else None)
                     for r in self.entry)

    def to_json(self) -> dict[str, Any]:
        return {"type": "deployment", "v": RECORD_VERSION, "name": self.name,
                "fleet": self.fleet, "epoch": self.epoch, "model": self.model,
                "strategy": self.strategy, "layout": self.layout, "plan": self.plan,
                "predicted": self.predicted, "nodes": self.nodes, "stages": self.stages,
                "entry": self.entry, "results": self.results, "created": self.created,
                "updated": self.updated, "extra": self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        """Parse a retained record; FleetError names the missing key."""
        if not isinstance(d, dict) or d.get("type") != "deployment":
            raise FleetError("not a deployment record")
        if d.get("v") != RECORD_VERSION:
            raise FleetError(f"deployment record version {d.get('v')!r} is not "
                             f"{RECORD_VERSION}")
        try:
            return cls(name=d["name"], fleet=d["fleet"], epoch=int(d["epoch"]),
                       model=d["model"], layout=d["layout"], nodes=d["nodes"],
                       stages=d["stages"], entry=d["entry"], results=d["results"],
                       strategy=d.get("strategy", ""), plan=d.get("plan"),
                       predicted=d.get("predicted"), created=d.get("created", 0.0),
                       updated=d.get("updated", 0.0), extra=d.get("extra") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise FleetError(f"deployment record {d.get('name')!r}: bad or missing key "
                             f"{exc}") from None

    def stage_nodes(self) -> list[str]:
        """Nodes that run at least one stage, in stage order."""
        return list(dict.fromkeys(s["node"] for s in self.stages.values()))


def tensor_json(t: Any) -> dict[str, Any]:
    """A TensorInfo/TensorSpec as {name, shape, dtype, scale, zero_point}."""
    scale, zp = t.quant() if hasattr(t, "quant") else (t.scale, t.zero_point)
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "scale": scale,
            "zero_point": zp}
