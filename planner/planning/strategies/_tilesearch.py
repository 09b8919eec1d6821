"""Search shared by `tiles` and `hybrid`: head range, fused-tile stack, then layer ranges.

A candidate is: an optional head [0, c) on one device (D3's device tier, or pinned ops),
a tile stack [c, e) over the k fastest devices of a pool on an r x c grid whose row and
column splits follow device speed, and the rest [e, n) as layer ranges from `Suffix`. The
search scores every candidate with a closed form (a tile's compute is its input window's
share of the image times the stack's full-size time on its device; scatter from the
holder and gather to the next device at link cost), which needs only `halo(c, e)` per
stack; the best few are then built and simulated exactly (`tile_tasks` traces every tile)
and the best simulated plan wins. So the answer is optimal among the scored family up to
the closed form's error, and never worse than any of the verified candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.errors import PlanError, TileError
from planner.model.tile import halo, split_by_weights
from planner.model.tilesteps import op_step  # per-op tileability, once per op
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Stage
from planner.planning.plan import tile_stage as plan_tile_stage
from planner.planning.strategies._suffix import Suffix

VERIFY = 6  # candidates simulated exactly after the closed-form ranking


@dataclass(frozen=True)
class Candidate:
    """One scored head + stack (+ next device) choice."""

    score: float
    head: tuple[int, str | None]  # (c, device): ops [0, c) on device, c = 0 for no head
    stack: tuple[int, int]
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    devices: tuple[str, ...]
    suffix_key: tuple[str, ...]
    next_index: int  # index into the suffix's names, -1 when the stack ends the model


def single_cuts(graph) -> list[int]:
    """Cuts crossed by exactly one activation tensor."""
    return [c for c in range(len(graph.ops) + 1) if len(graph.live_at(c)) == 1]


def stack_cuts(graph) -> list[int]:
    """Cuts where a tile stack may end: every tensor crossing it is NHWC (a stack's part
    may have several outputs, e.g. ending inside a residual block or a route)."""
    return [c for c in range(len(graph.ops) + 1) if graph.live_at(c)
            and all(len(graph.tensors[t].shape) == 4 for t in graph.live_at(c))]


def tileable_ops(graph) -> np.ndarray:
    """ok[i]: op i alone can be part of a tile stack (its own kind and shapes allow it)."""
    ok = np.zeros(len(graph.ops), dtype=bool)
    for i in range(len(graph.ops)):
        try:
            op_step(graph, i)
            ok[i] = True
        except TileError:
            pass
    return ok


def stack_ends(cuts: list[int], ok_ops: np.ndarray, start: int, stop: int) -> list[int]:
    """Single cuts e in (start, stop] with every op of [start, e) tileable."""
    bad = np.nonzero(~ok_ops[start:])[0]
    limit = min(stop, start + int(bad[0]) if len(bad) else len(ok_ops))
    return [e for e in cuts if start < e <= limit]


def thin(values: list[int], m: int) -> list[int]:
    """At most m evenly spread values, first and last kept (bounds the search's cost)."""
    if len(values) <= m:
        return list(values)
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, m)).astype(int))
    return [values[i] for i in idx]


def group_sizes(pool: int, cap: int | None) -> list[int]:
    """Tile counts to try: every k up to 16, then a few larger ones."""
    top = min(pool, cap or pool)
    return [k for k in range(2, top + 1) if k <= 16 or k in (20, 24, 32, 48, 64) or k == top]


def stack_sizes(name: str, pool: int, constraints: Constraints, head: str | None) -> list[int]:
    """group_sizes under --max-nodes (a head device takes one of them); PlanError if < 2."""
    cap = constraints.max_nodes - (1 if head else 0) if constraints.max_nodes else None
    sizes = group_sizes(pool, cap)
    if not sizes:
        raise PlanError(f"strategy {name!r}: --max-nodes {constraints.max_nodes} "
                        "leaves room for fewer than 2 tiles")
    return sizes


def shapes(k: int, out_h: int, out_w: int) -> list[tuple[int, int]]:
    """Grids r x c with r * c = k that the stack's output can hold."""
    return [(r, k // r) for r in range(1, k + 1) if k % r == 0 and r <= out_h and k // r <= out_w]


def grid(
    speeds: np.ndarray, r: int, c: int, out_h: int, out_w: int
) -> tuple[list[int], list[int], np.ndarray]:
    """Row/col split points and the device order (row-major) for speeds sorted fastest first.

    Devices fill the grid column by column in a snake so every row gets a similar total
    speed; rows are then sized by their total speed and columns by theirs.
    """
    cell = np.zeros((r, c), dtype=int)
    for q in range(r * c):
        col, pos = divmod(q, r)
        cell[pos if col % 2 == 0 else r - 1 - pos, col] = q
    v = speeds[cell]
    rows = split_by_weights(out_h, list(v.sum(axis=1))) if r > 1 else [0, out_h]
    cols = split_by_weights(out_w, list(v.sum(axis=0))) if c > 1 else [0, out_w]
    return rows, cols, cell.reshape(-1)


def _fractions(splits: list[int], stride: int, before: int, after: int, size: int) -> np.ndarray:
    """Each tile's input window along one axis as a share of the image (docs/tiling.md halo)."""
    extra = size % stride  # strides and halos are Fractions after an upsample: exact, then float
    return np.array(
        [
            float(min(b * stride + after + extra, size) - max(a * stride - before, 0)) / size
            for a, b in zip(splits, splits[1:], strict=False)
        ]
    )


class Search:
    """Closed-form scoring of head + stack + suffix candidates for one cost model."""

    def __init__(self, cm: CostModel, objective: str, ok: np.ndarray, names: list[str]) -> None:
        self.cm, self.objective, self.ok, self.names = cm, objective, ok, names
        self.add = objective == "latency"
        self.suffixes: dict[tuple[str, ...], Suffix] = {}
        self.found: list[Candidate] = []
        # Link matrices over every device (sources and sinks included): transfers in numpy.
        prof = cm.profile
        every = list(prof.devices)
        self.at = {d: i for i, d in enumerate(every)}
        self.lat = np.array(
            [[0.0 if a == b else prof.link(a, b).latency for b in every] for a in every]
        )
        self.inv = np.array(
            [[0.0 if a == b else 1.0 / prof.link(a, b).bandwidth for b in every] for a in every]
        )

    def sends(self, src: list[str], dst: list[str], nbytes: np.ndarray) -> np.ndarray:
        """(len(src), len(dst)) seconds to send nbytes[i] from src[i] to each of dst."""
        i = [self.at[d] for d in src]
        j = [self.at[d] for d in dst]
        t = self.lat[np.ix_(i, j)] + nbytes[:, None] * self.inv[np.ix_(i, j)]
        return np.where((nbytes[:, None] > 0) & (self.inv[np.ix_(i, j)] > 0), t, 0.0)

    def suffix(self, key: tuple[str, ...]) -> Suffix:
        """The suffix DP over devices `key` (cached: several groups share one)."""
        if key not in self.suffixes:
            cols = [self.names.index(d) for d in key]
            self.suffixes[key] = Suffix(self.cm, list(key), self.objective, self.ok[:, cols])
        return self.suffixes[key]

    def _join(self, a, b):
        return a + b if self.add else np.maximum(a, b)

    def score(self, head: tuple[int, str | None], head_cost: float, holder: str, e: int,
              group: list[str], sizes: list[int], suffix_of) -> None:
        """Score every grid over every prefix of `group` for the stack [c, e)."""
        cm, c = self.cm, head[0]
        try:
            h = halo(cm.graph, c, e)
        except TileError:
            return
        out_h, out_w, H, W = h.out_shape[1], h.out_shape[2], h.in_shape[1], h.in_shape[2]
        # every tensor crossing the cut (a stack may start or end inside a residual or a
        # route): a tile moves its share of each, by its share of the first one's area
        in_px = sum(cm.graph.tensors[t].nbytes for t in cm.graph.live_at(c)) / (H * W)
        out_px = sum(cm.graph.tensors[t].nbytes for t in cm.graph.live_at(e)) / (out_h * out_w) \
            if e < cm.n else cm.out_bytes(c, e) / (out_h * out_w)
        secs = np.array([cm.range_seconds(d, c, e) for d in group])
        # per tile; gathering is left to the simulation
        ovh = np.array([cm.overhead(d) for d in group])
        p = cm.profile
        for k in sizes:
            devs = group[:k]
            mem = [cm.tile_memory(c, e, 1.0 / k, d) <= p.devices[d].memory_bytes for d in devs]
            if not all(mem):
                continue
            key = suffix_of(devs)
            sfx = self.suffix(key) if e < cm.n else None
            for r, q in shapes(k, out_h, out_w):
                rows, cols, order = grid(1.0 / np.maximum(secs[:k], 1e-12), r, q, out_h, out_w)
                fy = _fractions(rows, h.stride_y, h.before_y, h.after_y, H)
                fx = _fractions(cols, h.stride_x, h.before_x, h.after_x, W)
                area = np.outer(fy, fx).reshape(-1)
                tdev = [devs[i] for i in order]
                comp = area * secs[order] + ovh[order]
                inb = area * H * W * in_px
                outb = np.outer(np.diff(rows), np.diff(cols)).reshape(-1) * out_px
                scatter = self.sends([holder] * len(tdev), tdev, inb).diagonal()
                if sfx is None:
                    gather, tail = self.sends(tdev, [p.sink], outb), np.zeros(1)
                else:
                    gather, tail = self.sends(tdev, sfx.names, outb), sfx.F[e]
                if self.add:
                    stage = ((scatter + comp)[:, None] + gather).max(axis=0)
                else:
                    stage = np.maximum(max(scatter.max(), comp.max()), gather.max(axis=0))
                total = self._join(self._join(head_cost, stage), tail)
                j = int(np.argmin(total))
                if math.isfinite(total[j]):
                    self.found.append(
                        Candidate(
                            float(total[j]),
                            head,
                            (c, e),
                            tuple(rows),
                            tuple(cols),
                            tuple(tdev),
                            key,
                            j if sfx is not None else -1,
                        )
                    )

    def best(self, n: int = VERIFY) -> list[Candidate]:
        """The n best distinct candidates by closed-form score, and when some stacks end at a
        cut crossed by several tensors, also the n // 2 best of those that end at a cut of
        one (so widening the search to such ends never loses the plan it found before)."""
        out = self._best(self.found, n)
        single = set(single_cuts(self.cm.graph))
        if any(c.stack[1] not in single for c in self.found):
            out += [c for c in self._best([c for c in self.found if c.stack[1] in single], n // 2)
                    if c not in out]
        return out

    @staticmethod
    def _best(found: list[Candidate], n: int) -> list[Candidate]:
        seen, out = set(), []
        for cand in sorted(found, key=lambda x: x.score):
            sig = (cand.head, cand.stack, len(cand.rows), len(cand.cols), len(cand.devices))
            if sig not in seen:
                seen.add(sig)
                out.append(cand)
            if len(out) == n:
                break
        return out

    def stages(self, cand: Candidate) -> list[Stage]:
        """The stage list of a candidate: head, tile stack, suffix ranges."""
        c, dev = cand.head
        out = [Stage(0, (0, c), dev)] if c > 0 else []
        out.append(tile_stage(self.cm, len(out), cand.stack, cand.rows, cand.cols, cand.devices))
        if cand.next_index >= 0:
            out += self.suffix(cand.suffix_key).stages(cand.stack[1], cand.next_index, len(out))
        return out


def tile_stage(cm: CostModel, sid: int, ops: tuple[int, int], rows, cols, devices) -> Stage:
    """A tile Stage with the manifest tile records (TileError when the layout is not exact)."""
    return plan_tile_stage(cm.graph, sid, ops, rows, cols, devices)


def untileable_error(graph, start: int, strategy: str) -> TileError:
    """Why no tile stack can start at op `start`: the first op that stops it, named."""
    try:
        op_step(graph, start)
    except TileError as exc:
        return TileError(f"strategy {strategy!r}: no tile stack can start at op {start}: {exc}")
    return TileError(f"strategy {strategy!r}: ops from {start} hold no tileable range ending where "
                     f"a stack may end (op {start} is {graph.ops[start].type})")


def no_plan_error(strategy: str, reasons: list[str]) -> PlanError:
    """PlanError listing why every verified candidate failed."""
    why = "; ".join(dict.fromkeys(reasons)) or "no candidate fits the constraints"
    return PlanError(f"strategy {strategy!r} found no valid plan: {why}")
