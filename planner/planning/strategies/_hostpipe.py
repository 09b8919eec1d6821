"""Throughput with shared hosts: the least host work among chains whose stages fit a period.

Devices on one host with fewer cores than devices share its cores, so a chain's period
also has the term  H = (busy seconds of its devices on the host + transfers between two
of them) / cores  (`CostModel.host_bound`, what the simulator books). H is a sum over the
chain's stages and cuts, so for a period T the chains whose every stage, transfer and the
source fit T can be searched for the least H by a shortest-path DP over (devices used per
class, class of the last stage, position): the state keeps, per position where the next
stage may start, the least host work of a prefix ending there (`min_host_work`). The
period of the best chain is max(T, H(T)); how `throughput` turns that into the exact
optimum is in its module docstring. With several shared hosts the DP minimises the sum of
their terms, which bounds their maximum from above: a heuristic there.
"""

from __future__ import annotations

import numpy as np

from planner.planning.costmodel import CostModel
from planner.planning.strategies._classes import Classes

_EPS = 1e-12
WORK_LIMIT = 150_000_000  # (start, end) pairs scored over all periods tested before giving up


class TooBig(Exception):
    """The instance needs more DP work than WORK_LIMIT or more states than allowed."""


class HostWork:
    """Per class: host work of a stage [a, b), of a send at each cut, and the fixed part."""

    def __init__(self, cm: CostModel, cl: Classes, hosts: set[str]) -> None:
        p, shared = cm.profile, cm.shared_hosts()
        self.cm, self.cl, n = cm, cl, cm.n

        def weight(d: str) -> tuple[str | None, float]:
            h = shared.get(d)
            return (h[0], 1.0 / h[1]) if h is not None and h[0] in hosts else (None, 0.0)

        self.host = [weight(r) for r in cl.reps]
        src_host, src_w = weight(p.source)
        sink_host, _ = weight(p.sink)
        self.base = src_w * cm.overhead(p.source)
        self.src_send = [
            w * cm.transfer(p.source, r, cm.cut_bytes[0])
            if h is not None and h == src_host
            else 0.0
            for r, (h, w) in zip(cl.reps, self.host, strict=True)
        ]
        k = len(cl.reps)
        zero = np.zeros(n + 1)
        self.send = [
            [
                self.host[i][1] * np.nan_to_num(cl.send_times(i, j, cm.cut_bytes), posinf=0.0)
                if self.host[i][0] is not None and self.host[i][0] == self.host[j][0]
                else zero
                for j in range(k)
            ]
            for i in range(k)
        ]
        self.to_sink = [h is not None and h == sink_host for h, _ in self.host]
        self._stage: dict[int, np.ndarray] = {}
        self.spent = 0  # DP work so far, against WORK_LIMIT

    def stage(self, i: int) -> np.ndarray:
        """C[a, b]: host work of ops [a, b) on a member of class i (its compute, overhead and
        its outputs' send to the sink when both are on the host)."""
        if i not in self._stage:
            cm, r = self.cm, self.cl.reps[i]
            _, w = self.host[i]
            P = cm.prefix[r]
            c = w * (P[None, :] - P[:, None] + cm.profile.devices[r].stage_overhead_s)
            if self.to_sink[i] and r != cm.profile.sink:
                ln = cm.profile.link(r, cm.profile.sink)
                out = cm.out_prefix[None, :] - cm.out_prefix[:, None]
                c = c + w * np.where(out > 0, ln.latency + out / ln.bandwidth, 0.0)
            self._stage[i] = c
        return self._stage[i]


def min_host_work(cm: CostModel, cl: Classes, rg, hw: HostWork, T: float, max_nodes: int,
                  state_limit: int):
    """(least host work, path [(class, a, b)]) over chains fitting period T; (inf, None) if none."""
    n, k = cm.n, len(cl.reps)
    t = T * (1 + _EPS) + 1e-15
    pos = np.arange(n + 1)
    valid = []
    for i in range(k):
        lo, hi = rg.interval(i, T)
        valid.append((pos[None, :] >= lo[:, None]) & (pos[None, :] <= hi[:, None]))
    send_ok = [[cl.send_times(i, j, cm.cut_bytes) <= t for j in range(k)] for i in range(k)]
    layer: dict[tuple, np.ndarray] = {}
    for j in range(k):
        if cl.counts[j] > 0 and cm.transfer(cm.profile.source, cl.reps[j], cm.cut_bytes[0]) <= t:
            w = np.full(n + 1, np.inf)
            w[0] = hw.base + hw.src_send[j]
            layer[(tuple(int(x == j) for x in range(k)), j)] = w
    parents: list[dict] = [{key: None for key in layer}]  # per layer: key -> (prev keys by start)
    starts: list[dict] = []  # per layer: key -> start of the stage ending at each position
    best, final, states = np.inf, None, len(layer)
    for depth in range(max_nodes):
        nxt: dict[tuple, np.ndarray] = {}
        nxt_par: dict[tuple, list] = {}
        starts.append({})
        for key, w in layer.items():
            c, i = key
            A = np.nonzero(w < best)[0]
            if A.size == 0:
                continue
            hw.spent += A.size * (n + 1)
            if hw.spent > WORK_LIMIT:
                raise TooBig()
            m = np.where(valid[i][A], w[A, None] + hw.stage(i)[A], np.inf)
            arg = m.argmin(axis=0)
            ends = m[arg, pos]
            starts[depth][key] = A[arg]
            if ends[n] < best:
                best, final = float(ends[n]), (depth, key)
            if sum(c) >= max_nodes:
                continue
            for j in range(k):
                if c[j] >= cl.counts[j]:
                    continue
                cost = np.where(send_ok[i][j], ends + hw.send[i][j], np.inf)
                cost[n] = np.inf
                if not (cost < best).any():
                    continue
                nk = (tuple(x + (y == j) for y, x in enumerate(c)), j)
                if nk not in nxt:
                    nxt[nk] = np.full(n + 1, np.inf)
                    nxt_par[nk] = [None] * (n + 1)
                better = np.nonzero(cost < nxt[nk])[0]
                nxt[nk][better] = cost[better]
                for b in better:
                    nxt_par[nk][b] = key
        states += len(nxt)
        if states > state_limit:
            raise TooBig()
        if not nxt:
            break
        layer = nxt
        parents.append(nxt_par)
    if final is None:
        return np.inf, None
    return best, _walk(final, starts, parents, n)


def _walk(final, starts, parents, n: int) -> list[tuple[int, int, int]]:
    depth, key = final
    b, out = n, []
    while True:
        a = int(starts[depth][key][b])
        out.append((key[1], a, b))
        if depth == 0:
            break
        key, depth, b = parents[depth][key][a], depth - 1, a
    return out[::-1]
