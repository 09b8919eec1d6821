"""Layer ranges for the rest of a model: best finish of ops [i, n) from any cut, for every device.

The tile strategies fix a head (a device tier, a fused-tile stack) and need, for every
cut i where the head might end and every device k that might run the next range, the best
way to finish the model. One backward DP over (cut, device) gives all of them at once:

    latency:    F[i, k] = min_j  C(k, i, j) + max(send(k -> sink, outputs of [i, j)), G[j, k])
    throughput: F[i, k] = min_j  max(C(k, i, j), send(k -> sink, ...), G[j, k])
    G[j, k]     = min_k' hop(k -> k', live bytes at j) (+ or max) F[j, k'];  G[n, k] = 0

with C the range's compute seconds plus the device's stage overhead, hop 0 on one device,
ranges within the device's memory and pinned ops only on their node. Like the core
`latency` DP's relaxation, a device may
host several ranges, which is harmless for one frame's latency. For throughput a device
hosting two ranges is charged for both, so there the chain uses devices in the order of
`names` (each at most once): exact for interchangeable devices, a heuristic otherwise.
Cost O(n^2 D + n D^2) with numpy.
"""

from __future__ import annotations

import math

import numpy as np

from planner.planning.costmodel import CostModel
from planner.planning.plan import Stage

INF = math.inf


class Suffix:
    """F (cut, device) table and the argmins to rebuild the ranges behind each entry."""

    def __init__(
        self, cm: CostModel, names: list[str], objective: str, ok: np.ndarray | None = None
    ) -> None:
        self.cm, self.names, self.objective = cm, list(names), objective
        n, D, p = cm.n, len(names), cm.profile
        self.n = n
        ok = np.ones((n, D), dtype=bool) if ok is None else ok
        P = np.stack([cm.prefix[d] for d in names], axis=1) if D else np.zeros((n + 1, 0))
        lat = np.array(
            [[0.0 if a == b else p.link(a, b).latency for b in names] for a in names]
        ).reshape(D, D)
        inv = np.array(
            [[0.0 if a == b else 1.0 / p.link(a, b).bandwidth for b in names] for a in names]
        ).reshape(D, D)
        sink = [p.link(d, p.sink) for d in names]
        s_lat = np.array(
            [0.0 if d == p.sink else s.latency for d, s in zip(names, sink, strict=True)]
        )
        s_inv = np.array(
            [0.0 if d == p.sink else 1.0 / s.bandwidth for d, s in zip(names, sink, strict=True)]
        )
        reach = (
            np.stack([cm.memory_reach(d) for d in names], axis=1)
            if D
            else np.zeros((n + 1, 0), int)
        )
        # okrun[i, k]: last op end j such that ops [i, j) are all allowed on k.
        okrun = np.zeros((n + 1, D), dtype=int)
        okrun[n] = n
        for i in range(n - 1, -1, -1):
            okrun[i] = np.where(ok[i], okrun[i + 1], i)
        limit = np.minimum(reach, okrun)
        ovh = np.array([p.devices[d].stage_overhead_s for d in names])
        add = objective == "latency"
        # Throughput charges a device for all its ranges, so the chain must not revisit one:
        # devices are taken in `names` order (callers sort them fastest first).
        later = np.triu(np.ones((D, D), dtype=bool), 1)
        F = np.full((n + 1, D), INF)
        G = np.full((n + 1, D), INF)
        G[n] = 0.0
        self.jbest = np.zeros((n + 1, D), dtype=int)
        self.kbest = np.zeros((n + 1, D), dtype=int)
        outp = cm.out_prefix
        for i in range(n - 1, -1, -1):
            js = np.arange(i + 1, n + 1)
            comp = P[i + 1:] - P[i][None, :] + ovh[None, :]  # (n-i, D) stage seconds
            ob = (outp[i + 1:] - outp[i])[:, None]
            out = np.where(ob > 0, s_lat[None, :] + ob * s_inv[None, :], 0.0)
            tail = G[i + 1:]
            vals = comp + np.maximum(out, tail) if add else np.maximum(np.maximum(comp, out), tail)
            vals = np.where(js[:, None] <= limit[i][None, :], vals, INF)
            jb = np.argmin(vals, axis=0) if D else np.zeros(0, int)
            F[i] = vals[jb, np.arange(D)]
            self.jbest[i] = js[jb] if D else jb
            if i == 0:
                continue
            hop = lat + cm.cut_bytes[i] * inv  # (D, D) k -> k'
            cand = (
                hop + F[i][None, :] if add else np.maximum(np.where(later, hop, INF), F[i][None, :])
            )
            kb = np.argmin(cand, axis=1)
            G[i] = cand[np.arange(D), kb]
            self.kbest[i] = kb
        self.F, self.G = F, G

    def best_from(
        self, i: int, holder: str | None, nbytes: float | None = None
    ) -> tuple[float, int]:
        """(seconds, device index) to finish from cut i with its tensors on `holder`."""
        if i >= self.n:
            return 0.0, -1
        cm, b = self.cm, self.cm.cut_bytes[i] if nbytes is None else nbytes
        hop = np.array([cm.transfer(holder, d, b) if holder else 0.0 for d in self.names])
        vals = hop + self.F[i] if self.objective == "latency" else np.maximum(hop, self.F[i])
        k = int(np.argmin(vals)) if len(vals) else -1
        return (float(vals[k]) if k >= 0 else INF), k

    def stages(self, i: int, k: int, first_id: int) -> list[Stage]:
        """The ranges behind F[i, k]: first on names[k], then the argmin chain to op n."""
        out: list[Stage] = []
        while i < self.n:
            j = int(self.jbest[i, k])
            if out and out[-1].device == self.names[k]:
                # A hop to the same device costs nothing, so ties split ranges needlessly.
                out[-1] = Stage(out[-1].id, (out[-1].ops[0], j), out[-1].device)
            else:
                out.append(Stage(first_id + len(out), (i, j), self.names[k]))
            if j < self.n:
                k = int(self.kbest[j, k])
            i = j
        return out

