"""Cost model: stage compute, transfers, DAG-aware cut bytes and memory, with O(1) range queries.

Conventions every strategy, the simulator and the tests share:
- a range [a, b) on device d costs the sum of its per-op seconds on d;
- a cut before op c carries every live tensor (residual branches included) except graph
  outputs nobody reads later: those go from their producing stage to the sink directly;
- a transfer costs latency + bytes / bandwidth on the directed link, 0 on one device;
- memory of a range = its weights + its peak live activations + the device's per-part
  interpreter overhead;
- a stage also costs its device `stage_overhead_s` per frame (plus, around tile stages,
  `piece_overhead_s` per extra gathered or sliced piece and `copy_s_per_byte`), and the
  source's `stage_overhead_s` is the client's per-frame cost;
- devices with the same `host` share its `host_cores` (see simulate.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from planner.planning.profile import Profile, op_seconds


@dataclass(frozen=True)
class TileTask:
    """One tile of a tile stage: its device, compute seconds, bytes in and out."""

    device: str
    seconds: float
    in_bytes: int
    out_bytes: int


class CostModel:
    """Costs of one model on one profile; arrays are indexed by op or cut position."""

    def __init__(self, graph, profile: Profile) -> None:
        self.graph = graph
        self.profile = profile
        self.n = len(graph.ops)
        self.times = {
            name: np.asarray(op_seconds(d, graph), dtype=float)
            for name, d in profile.devices.items()
        }
        self.prefix = {
            name: np.concatenate(([0.0], np.cumsum(t))) for name, t in self.times.items()
        }

    # ---- compute ---------------------------------------------------------------------------
    def range_seconds(self, device: str, a: int, b: int) -> float:
        """Compute seconds of ops [a, b) on device."""
        p = self.prefix[device]
        return float(p[b] - p[a])

    def stage_seconds(self, device: str, a: int, b: int) -> float:
        """Busy seconds per frame of a layer-range stage.

        That is its ops plus the device's stage overhead.
        """
        return self.range_seconds(device, a, b) + self.profile.devices[device].stage_overhead_s

    def overhead(
        self, device: str, extra_pieces: int = 0, copy_bytes: float = 0.0, fixed: bool = True
    ) -> float:
        """Seconds a stage spends per frame outside its interpreter: the fixed stage overhead,
        the region pieces it gathers or slices beyond the first of each tensor, and the
        bytes it stitches or slices."""
        d = self.profile.devices[device]
        base = d.stage_overhead_s if fixed else 0.0
        return base + extra_pieces * d.piece_overhead_s + copy_bytes * d.copy_s_per_byte

    def shared_hosts(self) -> dict[str, tuple[str, int]]:
        """device -> (host, cores) on hosts with fewer cores than devices.

        The others never wait.
        """
        return {
            d: (h, c)
            for h, (c, names) in self.profile.hosts().items()
            if c < len(names)
            for d in names
        }

    def host_bound(self, busy: dict[str, float], sends=()) -> dict[str, float]:
        """Seconds per frame each shared host needs: its devices' busy seconds plus the
        (src, dst, seconds) transfers between two of its devices, over its cores."""
        shared, work = self.shared_hosts(), {}
        for d, secs in busy.items():
            if d in shared:
                work[shared[d]] = work.get(shared[d], 0.0) + secs
        for a, b, secs in sends:
            if a in shared and shared[a] == shared.get(b):
                work[shared[a]] = work.get(shared[a], 0.0) + secs
        return {h: w / cores for (h, cores), w in work.items()}

    def transfer(self, src: str, dst: str, nbytes: float) -> float:
        """Seconds to move nbytes from src to dst (0 on the same device)."""
        return self.profile.transfer_seconds(src, dst, nbytes)

    # ---- tensors at cuts ---------------------------------------------------------------------
    @cached_property
    def _outputs(self) -> set[int]:
        return set(self.graph.outputs)

    def cut_tensors(self, c: int) -> list[int]:
        """Tensors stage boundary c carries to the next stage (graph-only outputs excluded)."""
        g = self.graph
        return [t for t in g.live_at(c)
                if t not in self._outputs or any(k >= c for k in g.consumers.get(t, []))]

    @cached_property
    def cut_bytes(self) -> np.ndarray:
        """cut_bytes[c] = bytes crossing a boundary before op c (c = 0: the model inputs)."""
        g = self.graph
        return np.array(
            [sum(g.tensors[t].nbytes for t in self.cut_tensors(c)) for c in range(self.n + 1)],
            dtype=float,
        )

    def outputs_in(self, a: int, b: int) -> list[int]:
        """Graph outputs produced by ops [a, b) (they go to the sink from that stage)."""
        prod = self.graph.producer
        return [t for t in self.graph.outputs if a <= prod.get(t, -1) < b]

    @cached_property
    def out_prefix(self) -> np.ndarray:
        """Prefix sums over ops of graph-output bytes each op produces."""
        per_op = np.zeros(self.n)
        for t in self.graph.outputs:
            k = self.graph.producer.get(t)
            if k is not None:
                per_op[k] += self.graph.tensors[t].nbytes
        return np.concatenate(([0.0], np.cumsum(per_op)))

    def out_bytes(self, a: int, b: int) -> float:
        """Bytes of graph outputs produced by ops [a, b)."""
        return float(self.out_prefix[b] - self.out_prefix[a])

    # ---- memory ------------------------------------------------------------------------------
    @cached_property
    def working_set(self) -> np.ndarray:
        """Live activation bytes while op i runs: everything live before it plus its outputs."""
        g = self.graph
        ws = np.zeros(self.n)
        for i, op in enumerate(g.ops):
            live = g.live_at(i)
            outs = [t for t in op.outputs if not g.is_static(t) and t not in live]
            ws[i] = sum(g.tensors[t].nbytes for t in live) + sum(g.tensors[t].nbytes for t in outs)
        return ws

    @cached_property
    def weight_prefix(self) -> np.ndarray:
        """Prefix sums of weight bytes per op."""
        return np.concatenate(([0.0], np.cumsum([op.weight_bytes for op in self.graph.ops])))

    @cached_property
    def range_memory_table(self) -> np.ndarray:
        """M[a, b] = weights + peak activations of ops [a, b) (inf where b <= a)."""
        n, ws, w = self.n, self.working_set, self.weight_prefix
        m = np.full((n + 1, n + 1), np.inf)
        for a in range(n):
            peak = np.maximum.accumulate(ws[a:])
            m[a, a + 1:] = w[a + 1:] - w[a] + peak
        return m

    def memory(self, device: str, a: int, b: int) -> int:
        """Bytes device needs to hold ops [a, b) as one part."""
        return int(self.range_memory_table[a, b]) + self.profile.devices[device].overhead_bytes

    def fits(self, device: str, a: int, b: int) -> bool:
        """Ops [a, b) fit the device's memory budget."""
        return self.memory(device, a, b) <= self.profile.devices[device].memory_bytes

    def memory_reach(self, device: str) -> np.ndarray:
        """reach[a] = largest b such that [a, b) fits on device (a when even one op does not)."""
        d = self.profile.devices[device]
        ok = self.range_memory_table <= d.memory_bytes - d.overhead_bytes
        # Memory only grows with b, so the feasible b form a prefix [a+1, reach].
        counts = (
            np.cumprod(
                np.where(np.arange(self.n + 1)[None, :] > np.arange(self.n + 1)[:, None], ok, True),
                axis=1,
            ).sum(axis=1)
            - 1
        )
        return np.minimum(counts, self.n)

    # ---- tile stages -------------------------------------------------------------------------
    def tile_tasks(self, a: int, b: int, rows, cols, devices) -> list[TileTask]:
        """Per-tile compute and transfers of ops [a, b) on a tile grid.

        Halo recomputation is included. Tile compute is the range's full-size time on that
        device scaled by the tile's share of MACs; ranges without MACs scale by output area
        instead.
        """
        from planner.model.halo import program
        from planner.model.tile import tile_layout
        from planner.model.tilecost import tile_io_bytes, tile_macs

        layout = tile_layout(self.graph, a, b, list(rows), list(cols))
        macs = tile_macs(self.graph, a, b, layout)
        io = tile_io_bytes(self.graph, a, b, layout)
        full = sum(op.macs for op in self.graph.ops[a:b])
        # no MACs: a tile's share is its cropped bytes of every output over all of them
        out_total = 0 if full else sum(
            self.graph.tensors[t].nbytes for t in program(self.graph, a, b).outputs)
        out = []
        for dev, m, (bin_, bout) in zip(devices, macs, io, strict=True):
            share = m / full if full else bout / max(out_total, 1)
            out.append(TileTask(dev, self.range_seconds(dev, a, b) * share, bin_, bout))
        return out

    def tile_stage_seconds(self, a: int, b: int, rows, cols, devices, src: str, dst: str) -> float:
        """Tile stage time: max over tiles of their total.

        A tile's total is scatter from src + compute + overhead + gather to dst.
        """
        return max(
            self.transfer(src, t.device, t.in_bytes)
            + t.seconds
            + self.overhead(t.device)
            + self.transfer(t.device, dst, t.out_bytes)
            for t in self.tile_tasks(a, b, rows, cols, devices)
        )

    def tile_memory(self, a: int, b: int, share: float, device: str) -> int:
        """Memory of a tile of ops [a, b) holding `share` of the activations."""
        w = self.weight_prefix[b] - self.weight_prefix[a]
        peak = float(self.working_set[a:b].max()) * share
        return int(w + peak) + self.profile.devices[device].overhead_bytes
