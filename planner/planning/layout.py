"""A deployment layout: the stages a deployment runs, as op ranges on devices.

This is the small, planner-independent shape `deploy` works from: a chain of stages
covering ops [0, n), each either one op range on one device or an op range tiled over
several devices (`rows` x `cols` output split points, tile k on devices[k % len]).
`from_plan` turns a Plan (planner/planning/plan.py) into it; tests can write layouts by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from planner.errors import PlanError

Splits = int | tuple[int, ...]


@dataclass(frozen=True)
class StageLayout:
    """Ops [start, end) on `devices`; a tile stage when rows/cols are given."""

    start: int
    end: int
    devices: tuple[str, ...]
    rows: Splits | None = None
    cols: Splits | None = None

    @property
    def tiled(self) -> bool:
        return self.rows is not None or self.cols is not None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ops": [self.start, self.end], "devices": list(self.devices)}
        if self.tiled:
            d["rows"] = list(self.rows) if isinstance(self.rows, tuple) else (self.rows or 1)
            d["cols"] = list(self.cols) if isinstance(self.cols, tuple) else (self.cols or 1)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StageLayout:
        """Inverse of to_json; PlanError names the bad key."""
        try:
            start, end = (int(v) for v in d["ops"])
            devices = tuple(str(x) for x in d["devices"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"layout stage {d!r}: needs 'ops' [start, end] and 'devices' "
                            f"({exc})") from None
        return cls(start, end, devices, _splits(d.get("rows")), _splits(d.get("cols")))


def _splits(v: Any) -> Splits | None:
    if v is None or isinstance(v, int):
        return v
    return tuple(int(x) for x in v)


Layout = tuple[StageLayout, ...]


def check_layout(layout: Sequence[StageLayout], n_ops: int) -> Layout:
    """Validate that the stages chain over [0, n_ops); PlanError says where not."""
    if not layout:
        raise PlanError("layout has no stages")
    at = 0
    for k, s in enumerate(layout):
        if s.start != at or s.end <= s.start:
            raise PlanError(f"layout stage {k}: ops [{s.start}, {s.end}) do not continue the "
                            f"chain at op {at}")
        if not s.devices:
            raise PlanError(f"layout stage {k}: no device")
        if not s.tiled and len(s.devices) != 1:
            raise PlanError(f"layout stage {k}: {len(s.devices)} devices for an untiled range")
        at = s.end
    if at != n_ops:
        raise PlanError(f"layout ends at op {at}, the model has {n_ops} ops")
    return tuple(layout)


def layout_devices(layout: Sequence[StageLayout]) -> list[str]:
    """Every device the layout uses, in first-use order."""
    seen: dict[str, None] = {}
    for s in layout:
        for d in s.devices:
            seen.setdefault(d)
    return list(seen)


def chain(n_ops: int, cuts: Sequence[int], devices: Sequence[str]) -> Layout:
    """A plain pipeline: ops cut at `cuts`, stage k on devices[k]."""
    bounds = [0, *cuts, n_ops]
    if len(devices) != len(bounds) - 1:
        raise PlanError(f"{len(bounds) - 1} stages but {len(devices)} devices")
    return check_layout([StageLayout(a, b, (d,)) for a, b, d in
                         zip(bounds, bounds[1:], devices, strict=False)], n_ops)


def from_plan(plan: Any) -> Layout:
    """Layout of a Plan object or plan JSON dict (planner/planning/plan.py)."""
    doc = plan.to_json() if hasattr(plan, "to_json") else plan
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list):
        raise PlanError("plan has no 'stages' list")
    stages = []
    for k, st in enumerate(doc["stages"]):
        try:
            ops = st.get("ops") or st.get("op_range") or [st["start"], st["end"]]
            tiles = st.get("tiles") or st.get("tile")
            if isinstance(tiles, dict):
                devices = tiles.get("devices") or st.get("devices")
                rows, cols = tiles.get("rows"), tiles.get("cols")
            else:
                devices = st.get("devices") or [st["device"]]
                rows, cols = st.get("rows"), st.get("cols")
            stages.append(StageLayout.from_json({"ops": ops, "devices": devices,
                                                 "rows": rows, "cols": cols}))
        except (KeyError, TypeError, AttributeError) as exc:
            raise PlanError(f"plan stage {k}: cannot read op range and devices ({exc})") \
                from None
    return tuple(stages)
