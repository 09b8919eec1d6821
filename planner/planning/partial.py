"""`--partial-from OLD_PLAN`: D3's partial adjustment of a running plan after devices change.

Rule. A device has changed when its compute time for its stages, or a link it uses, moved
by more than REL_CHANGE against the old plan's predictions (or when the caller names it);
it has vanished when the new profile no longer lets it compute. Then only what touches
those devices moves:
- a boundary between two layer-range stages moves when either stage runs on a changed
  device; runs of movable boundaries are re-placed optimally (a DP over cut positions
  with the stages' devices fixed) between the nearest fixed boundaries;
- a vanished device's range goes to the fastest unused node (a spare), or is absorbed by
  its neighbours (its outer boundaries become movable); the better of the two is kept;
- a tile stage keeps its ops; its splits follow the new speeds, and a vanished tile
  device is replaced by a spare or the grid shrinks to the surviving devices.
The adjusted plan is kept when its simulated figure is within `tolerance` (default 10%)
of a full re-plan with the same strategy; otherwise the full plan is returned. Either
way `notes["replan"]` says which, why, and which stages moved.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from planner.errors import PlanError, TilefleetError
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Plan, Stage
from planner.planning.planbuild import make_plan
from planner.planning.profile import Profile
from planner.planning.simulate import simulate
from planner.planning.strategies._common import allowed, candidates, setup
from planner.planning.strategies._tilesearch import grid, shapes, tile_stage
from planner.planning.strategies.tiles import figure

TOLERANCE = 0.10
REL_CHANGE = 0.02


def _differs(old: float, new: float) -> bool:
    return abs(new - old) > REL_CHANGE * max(abs(old), 1e-12)


def detect_changes(old: Plan, cm: CostModel, names: list[str]) -> tuple[set[str], set[str]]:
    """(changed, vanished) devices of the old plan under the new cost model."""
    vanished = {d for d in old.devices() if d not in names}
    before = old.predicted.get("devices", {})
    changed: set[str] = set()
    if not vanished:
        now = simulate(old, cm, frames=2)
        for d, rec in now["devices"].items():
            if d not in before or _differs(before[d].get("busy_s", 0.0), rec["busy_s"]):
                changed.add(d)
        links = {(r["from"], r["to"]): r["busy_s"] for r in old.predicted.get("links", [])}
        for r in now["links"]:
            if _differs(links.get((r["from"], r["to"]), 0.0), r["busy_s"]):
                changed.update((r["from"], r["to"]))
        return changed & set(old.devices()), vanished
    busy: dict[str, float] = {}
    for s in old.stages:
        if s.tiles and not set(s.tiles.devices) & vanished:
            for t in cm.tile_tasks(*s.ops, s.tiles.rows, s.tiles.cols, s.tiles.devices):
                busy[t.device] = busy.get(t.device, 0.0) + t.seconds
        elif not s.tiles and s.device not in vanished:
            busy[s.device] = busy.get(s.device, 0.0) + cm.range_seconds(s.device, *s.ops)
    # Devices sharing a tile stage with a vanished one cannot be compared: they are re-split anyway.
    blind = {
        d
        for s in old.stages
        if s.tiles and set(s.tiles.devices) & vanished
        for d in s.tiles.devices
    }
    changed = {d for d, b in busy.items()
               if d not in blind and (d not in before or _differs(before[d].get("busy_s", 0.0), b))}
    return changed, vanished


def _window(cm: CostModel, ok: np.ndarray, names: list[str], devs: list[str], a: int, b: int,
            objective: str) -> list[int] | None:
    """Optimal cuts a = x0 < ... < xm = b for the fixed device sequence `devs`, or None."""
    add = objective == "latency"
    pos = np.arange(a, b + 1)
    f = np.full(len(pos), math.inf)
    back = []
    for k, d in enumerate(devs):
        col = ok[:, names.index(d)]
        reach = cm.memory_reach(d)
        comp = cm.prefix[d][pos][None, :] - cm.prefix[d][pos][:, None]  # [y, x]
        bad = ~np.triu(np.ones((len(pos), len(pos)), dtype=bool), 1)
        bad |= pos[None, :] > reach[pos][:, None]
        runs = np.concatenate(([0], np.cumsum(~col[a:b])))  # disallowed ops before each position
        bad |= (runs[None, :] - runs[:, None]) > 0
        if k == 0:
            start = np.where(pos == a, 0.0, math.inf)
        else:
            hop = np.array([cm.transfer(devs[k - 1], d, cm.cut_bytes[y]) for y in pos])
            start = f + hop if add else np.maximum(f, hop)
        vals = start[:, None] + comp if add else np.maximum(start[:, None], comp)
        vals = np.where(bad, math.inf, vals)
        back.append(np.argmin(vals, axis=0))
        f = vals[back[-1], np.arange(len(pos))]
    if not math.isfinite(f[-1]):
        return None
    cuts, x = [b], len(pos) - 1
    for k in range(len(devs) - 1, 0, -1):
        x = int(back[k][x])
        cuts.append(int(pos[x]))
    return [a] + cuts[::-1]


def _resplit(cm: CostModel, s: Stage, gone: set[str], spares: list[str]) -> Stage:
    """A tile stage on new speeds: vanished devices replaced by spares or the grid shrunk."""
    devs = [d if d not in gone else (spares.pop(0) if spares else None) for d in s.tiles.devices]
    devs = [d for d in devs if d]
    a, b = s.ops
    if len(devs) < 2:
        if not devs:
            raise PlanError(f"stage {s.id}: every tile device vanished and no spare node is left")
        return Stage(s.id, s.ops, devs[0])
    r, c = len(s.tiles.rows) - 1, len(s.tiles.cols) - 1
    out_h, out_w = s.tiles.rows[-1], s.tiles.cols[-1]
    if r * c != len(devs):
        opts = shapes(len(devs), out_h, out_w)
        r, c = min(opts, key=lambda rc: abs(rc[0] / rc[1] - r / c))
    speeds = np.array([1.0 / max(cm.range_seconds(d, a, b), 1e-12) for d in devs])
    order = np.argsort(-speeds)
    rows, cols, cell = grid(speeds[order], r, c, out_h, out_w)
    return tile_stage(cm, s.id, s.ops, rows, cols, [devs[order[i]] for i in cell])


def adjust(cm: CostModel, old: Plan, names: list[str], ok: np.ndarray, changed: set[str],
           vanished: set[str], objective: str, use_spares: bool) -> list[Stage]:
    """The old stages with only the boundaries next to changed or vanished devices moved."""
    used = set(old.devices())
    spares = sorted((d for d in names if d not in used), key=lambda d: cm.range_seconds(d, 0, cm.n))
    spares = spares if use_spares else []
    stages, touched = [], set(changed)
    for s in sorted(old.stages, key=lambda s: s.ops[0]):
        if s.tiles:
            hit = set(s.tiles.devices) & (changed | vanished)
            stages.append(_resplit(cm, s, vanished, spares) if hit else s)
        elif s.device in vanished:
            if spares:
                stages.append(Stage(s.id, s.ops, spares.pop(0)))
                touched.add(stages[-1].device)
            else:
                stages.append(Stage(s.id, s.ops, None))  # absorbed by its neighbours
        else:
            stages.append(s)
    out: list[Stage] = []
    k = 0
    while k < len(stages):
        # A window: single-device stages joined by movable boundaries (or absorbed stages).
        j = k
        while j + 1 < len(stages) and _movable(stages[j], stages[j + 1], touched):
            j += 1
        win = [s for s in stages[k:j + 1] if s.tiles or s.device is not None]
        if not win:
            raise PlanError("a vanished device's stage has no layer-range neighbour to absorb it")
        if j > k:
            a, b = stages[k].ops[0], stages[j].ops[1]
            cuts = _window(cm, ok, names, [s.device for s in win], a, b, objective)
            if cuts is None:
                raise PlanError(f"ops [{a}, {b}) do not fit their devices after the change")
            win = [
                Stage(s.id, (x, y), s.device) for s, x, y in zip(win, cuts, cuts[1:], strict=False)
            ]
        out.extend(win)
        k = j + 1
    return [replace(s, id=i) for i, s in enumerate(out)]


def _movable(left: Stage, right: Stage, touched: set[str]) -> bool:
    if left.tiles or right.tiles:
        return False  # a tile stack's range stays: its ends must stay tileable
    # device None: an absorbed stage, whose range its neighbours share out.
    return left.device in touched or right.device in touched or None in (left.device, right.device)


def moved(old: Plan, new: Plan) -> list[int]:
    """Ids of new stages that are not an old stage unchanged (same ops, devices, splits)."""
    keep = {
        (s.ops, s.devices, s.tiles.rows if s.tiles else (), s.tiles.cols if s.tiles else ())
        for s in old.stages
    }
    return [
        s.id
        for s in new.stages
        if (s.ops, s.devices, s.tiles.rows if s.tiles else (), s.tiles.cols if s.tiles else ())
        not in keep
    ]


def replan(graph, old: Plan, profile: Profile, constraints: Constraints, full_fn,
           tolerance: float = TOLERANCE, changed: set[str] | None = None) -> Plan:
    """Partial adjustment of `old` when within tolerance of `full_fn`'s plan, else that plan."""
    if old.model_sha256 != graph.sha256:
        raise PlanError(f"--partial-from: the old plan is for model {old.model_sha256[:12]}, "
                        f"not {graph.sha256[:12]} ({graph.source})")
    if not 0 <= tolerance:
        raise PlanError(f"--tolerance must be >= 0, got {tolerance}")
    cm = setup(graph, profile, constraints)
    names = candidates(cm, constraints)
    ok = allowed(cm, names, constraints)
    found, vanished = detect_changes(old, cm, names)
    changed = (set(changed) if changed is not None else found) - vanished
    full = full_fn(graph, profile, constraints)
    record = {"changed": sorted(changed), "vanished": sorted(vanished), "tolerance": tolerance,
              "full_figure": figure(full)}
    best, why = None, "no adjustment kept every range within memory"
    for spares in (True, False):
        try:
            stages = adjust(cm, old, names, ok, changed, vanished, constraints.objective, spares)
            p = make_plan(cm, stages, old.strategy, constraints, notes=dict(old.notes))
        except TilefleetError as exc:
            why = str(exc)
            continue
        if best is None or figure(p) < figure(best):
            best = p
    if best is not None:
        fb, ff = figure(best), figure(full)
        record["partial_figure"] = fb
        gap = (fb - ff) / abs(ff) if ff else 0.0
        if gap <= tolerance + 1e-12:
            record.update(
                mode="partial",
                moved_stages=moved(old, best),
                reason=(
                    f"adjusted plan within {gap:+.1%} of the full re-plan "
                    f"(tolerance {tolerance:.0%})"
                ),
            )
            return replace(best, notes={**best.notes, "replan": record})
        why = (
            f"adjusted plan {gap:+.1%} from the full re-plan, beyond the {tolerance:.0%} tolerance"
        )
    record.update(mode="full", moved_stages=moved(old, full), reason=why)
    return replace(full, notes={**full.notes, "replan": record})
