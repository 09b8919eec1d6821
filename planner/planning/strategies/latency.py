"""Strategy 'latency': minimum single-frame latency with layer ranges, optimal under the cost model.

Problem solved exactly: choose cuts 0 = c0 < c1 < ... < cm = n and pairwise distinct
devices d1..dm (m <= --max-nodes) minimising

    latency = max over stages k with graph outputs of (T_k + send(d_k -> sink, outputs of k))
    T_k     = T_{k-1} + send(d_{k-1} -> d_k, live bytes at c_{k-1}) + compute(d_k, [c_{k-1}, c_k))
              + stage_overhead(d_k)

with T_0 = release at the source plus its per-frame work (d_0 = source), where every range
fits its device's
memory and pinned ops run on their node. "Live bytes" are all tensors crossing the cut
(residuals included; graph outputs nobody reads later go to the sink instead).

Method: a shortest path over (cut position, device) solves the relaxation in which a
device may host several non-adjacent ranges, in O(n^2 D + n D^2) with numpy. Branch
and bound restores distinctness: when device v hosts ranges [a1, b1) and a later one, any
distinct solution has v's range entirely before op b1, entirely after it, or containing
it; the three branches forbid or force v there. Best-first on the relaxed bound, the
first distinct solution popped is optimal. With early graph outputs the objective is a
max; a parametric descent on the bound for early arrivals makes it exact.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from planner.errors import PlanError
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Plan
from planner.planning.planbuild import make_plan, ranges_to_stages
from planner.planning.profile import Profile
from planner.planning.strategies._classes import device_classes
from planner.planning.strategies._common import allowed, candidates, setup

NAME = "latency"
TOLERANCE = 1e-9  # relative optimality gap accepted when early outputs make latency a max
MAX_BRANCHES = 400  # nodes of the branch and bound before settling for the best distinct plan


class _Model:
    """Arrays of the chain DP for one cost model and candidate list."""

    def __init__(self, cm: CostModel, names: list[str]) -> None:
        p = cm.profile
        self.cm, self.names, self.n, D = cm, names, cm.n, len(names)
        self.P = np.stack([cm.prefix[d] for d in names], axis=1)  # (n+1, D)
        lat = np.array([[p.link(a, b).latency for b in names] for a in names])
        bw = np.array([[p.link(a, b).bandwidth for b in names] for a in names])
        self.lat, self.inv_bw = lat, 1.0 / bw
        self.same = np.eye(D, dtype=bool)
        # The source's own per-frame work (submitting) delays every first stage alike.
        self.src_send = np.array(
            [cm.transfer(p.source, d, cm.cut_bytes[0]) for d in names]
        ) + cm.overhead(p.source)
        self.ovh = np.array([p.devices[d].stage_overhead_s for d in names])
        sink = [p.link(d, p.sink) for d in names]
        self.sink_lat = np.array(
            [0.0 if d == p.sink else s.latency for d, s in zip(names, sink, strict=True)]
        )
        self.sink_inv_bw = np.array(
            [0.0 if d == p.sink else 1.0 / s.bandwidth for d, s in zip(names, sink, strict=True)]
        )
        self.reach = np.stack([cm.memory_reach(d) for d in names], axis=1)  # (n+1, D)
        self._sends: dict[int, np.ndarray] = {}
        self._cache = cm.n * cm.n * D <= 4_000_000  # bound-independent, reused by every pass

    def sink_sends(self, b: int) -> np.ndarray:
        """(b, D) seconds to send the outputs of ranges [a, b) to the sink, for all a < b."""
        got = self._sends.get(b)
        if got is None:
            got = self.sink_send(self.cm.out_prefix[b] - self.cm.out_prefix[:b])
            if self._cache:
                self._sends[b] = got
        return got

    def sink_send(self, out_bytes: np.ndarray) -> np.ndarray:
        """(A, D) seconds to send (A,) output byte counts from each device to the sink."""
        if not out_bytes.any():
            return np.zeros((len(out_bytes), len(self.names)))
        ob = out_bytes[:, None]
        return np.where(ob > 0, self.sink_lat[None, :] + ob * self.sink_inv_bw[None, :], 0.0)

    def solve(self, ok: np.ndarray, layers: int | None, bound: float):
        """Relaxed optimum (value, cuts, devices) with early arrivals <= bound.

        value is inf if there is none.
        """
        n, D, P, cm = self.n, len(self.names), self.P, self.cm
        # lastbad[b, d]: start of the allowed run ending at op b-1 on d.
        first_ok = np.zeros((n + 1, D), dtype=int)
        for b in range(1, n + 1):
            first_ok[b] = np.where(ok[b - 1], first_ok[b - 1], b)
        inf = math.inf
        n_layers = layers or 1
        g = np.full((n_layers + 1, n + 1, D), inf)
        g[0, 0] = self.src_send
        parent = {}
        best = (inf, None)
        for k in range(1, n_layers + 1):
            src = g[k - 1] if layers else g[0]
            dst = g[k] if layers else g[0]
            for b in range(1, n + 1):
                # (b, D) finish of a stage [a, b)
                vals = src[:b] + (P[b][None, :] - P[:b]) + self.ovh[None, :]
                a_idx = np.arange(b)[:, None]
                bad = (a_idx < first_ok[b][None, :]) | (self.reach[:b] < b)
                out = self.sink_sends(b)
                if b < n:
                    bad |= vals + out > bound
                else:
                    vals = vals + out  # the last stage's outputs close the frame
                vals = np.where(bad, inf, vals)
                a_best = np.argmin(vals, axis=0)
                f = vals[a_best, np.arange(D)]
                if b == n:
                    d = int(np.argmin(f))
                    if f[d] < best[0]:
                        best = (float(f[d]), (k, b, d, int(a_best[d])))
                    continue
                # Early outputs may arrive later than the chain's end: keep their max.
                send = self.lat + cm.cut_bytes[b] * self.inv_bw  # (D, D) e -> d
                cand = np.where(self.same, inf, f[:, None] + send)
                e_best = np.argmin(cand, axis=0)
                gv = cand[e_best, np.arange(D)]
                better = gv < dst[b]
                dst[b] = np.where(better, gv, dst[b])
                for d in np.nonzero(better)[0]:
                    parent[(k, b, int(d))] = (int(a_best[e_best[d]]), int(e_best[d]))
            if not layers:
                break
        if best[1] is None:
            return inf, None, None
        k, b, d, a = best[1]
        cuts, devs = [n], [d]
        while a > 0:
            cuts.append(a)
            pa, pe = parent[(k - 1 if layers else 1, a, d)]
            k, d, a = k - 1, pe, pa
            devs.append(d)
        cuts.append(0)
        return best[0], cuts[::-1], [self.names[i] for i in devs[::-1]]


def chain_latency(cm: CostModel, cuts: list[int], devices: list[str]) -> float:
    """The latency formula of the module docstring for one chain (used by tests and the descent)."""
    p = cm.profile
    t, prev, worst = cm.overhead(p.source), p.source, 0.0
    for a, b, d in zip(cuts, cuts[1:], devices, strict=False):
        t += cm.transfer(prev, d, cm.cut_bytes[a]) + cm.stage_seconds(d, a, b)
        out = cm.out_bytes(a, b)
        if out > 0:
            worst = max(worst, t + cm.transfer(d, p.sink, out))
        prev = d
    return worst


def _solve_bounded(m: _Model, ok: np.ndarray, layers: int | None):
    """Relaxed optimum including early outputs (exact, or within TOLERANCE of it).

    solve(B) gives the best final arrival among chains whose early outputs arrive before
    B. If it is >= B, no chain beats B (a lower bound); otherwise its chain is a new
    incumbent below B. Steps alternate between B just under the incumbent (which proves
    the incumbent optimal when it fails) and the midpoint of the bounds.
    """
    val, cuts, devs = m.solve(ok, layers, math.inf)
    if cuts is None:
        return math.inf, None, None
    lo, best = val, (chain_latency(m.cm, cuts, devs), cuts, devs)
    step = 0
    while best[0] - lo > TOLERANCE * best[0]:
        bound = best[0] * (1 - 1e-12) if step % 2 == 0 else (lo + best[0]) / 2
        step += 1
        val, cuts, devs = m.solve(ok, layers, bound)
        if cuts is None or val >= bound:
            if step % 2 == 1:
                break  # nothing arrives before the incumbent: it is optimal
            lo = bound
            continue
        true = chain_latency(m.cm, cuts, devs)
        if true < best[0]:
            best = (true, cuts, devs)
    return best


def _swap_twins(devs: list[str], twins: dict) -> list[str]:
    """Replace a second use of a device by an unused identical twin: same cost, now distinct."""
    out, used = [], set(devs)
    for d in devs:
        if d in out:
            free = [t for t in twins.get(d, ()) if t not in used]
            if free:
                d = free[0]
                used.add(d)
        out.append(d)
    return out


def _repeat(devs: list[str], cuts: list[int]):
    """(device, end of its first range) for the first device used twice, else None."""
    seen = {}
    for i, d in enumerate(devs):
        if d in seen:
            return d, cuts[seen[d] + 1]
        seen[d] = i
    return None


def solve(cm: CostModel, names: list[str], constraints: Constraints):
    """Optimal (latency, cuts, devices, branch count) under the constraints; PlanError if none."""
    m = _Model(cm, names)
    base = allowed(cm, names, constraints)
    k = constraints.max_nodes
    layers = k if k is not None and k < len(names) else None
    # Children enter the heap with the cheap bound (early outputs ignored) and are
    # refined to their exact relaxed value only when popped.
    heap, tick, fallback = [], 0, None
    twins = {d: cls for cls in device_classes(cm, names, base, constraints).members for d in cls}
    heapq.heappush(heap, (0.0, tick, base, False, None, None))
    while heap and tick < MAX_BRANCHES:
        val, _, ok, exact, cuts, devs = heapq.heappop(heap)
        if not exact:
            val, cuts, devs = _solve_bounded(m, ok, layers)
            if cuts is not None:
                tick += 1
                heapq.heappush(heap, (val, tick, ok, True, cuts, devs))
            continue
        devs = _swap_twins(devs, twins)
        rep = _repeat(devs, cuts)
        if rep is None:
            return val, cuts, devs, tick, True
        v, x = rep
        j = names.index(v)
        for kind in ("before", "after", "contains"):
            child = ok.copy()
            if kind == "before":
                child[x:, j] = False
            elif kind == "after":
                child[: x + 1, j] = False
            else:
                child[x, :] = False
                child[x, j] = ok[x, j]
            tick += 1
            cv, cc, cd = m.solve(child, layers, math.inf)
            if cc is not None:
                heapq.heappush(heap, (cv, tick, child, False, None, None))
                if _repeat(cd, cc) is None:
                    true = chain_latency(cm, cc, cd)
                    if fallback is None or true < fallback[0]:
                        fallback = (true, cc, cd)
    if fallback is not None:
        return fallback[0], fallback[1], fallback[2], tick, False
    raise no_fit_error(cm, names)


def no_fit_error(cm: CostModel, names: list[str]) -> PlanError:
    """Why no chain exists: the op or range that no candidate device can hold."""
    for i in range(cm.n):
        need = {d: cm.memory(d, i, i + 1) for d in names}
        if all(need[d] > cm.profile.devices[d].memory_bytes for d in names):
            d = min(names, key=lambda d: need[d] - cm.profile.devices[d].memory_bytes)
            return PlanError(
                f"plan does not fit memory: op {i} alone needs {need[d]} bytes on {d!r}, "
                f"whose budget is {cm.profile.devices[d].memory_bytes} bytes (the largest fit)"
            )
    return PlanError(
        f"plan does not fit memory: the model needs more than the {len(names)} allowed "
        f"devices can hold ({', '.join(names)})"
    )


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Minimum-latency layer-range chain (see module docstring for the exact problem)."""
    cm = setup(graph, profile, constraints)
    names = candidates(cm, constraints)
    val, cuts, devs, branches, optimal = solve(cm, names, constraints)
    notes = {
        "problem": (
            "min single-frame latency, contiguous ranges on distinct devices, memory per device"
        ),
        "dp_latency_s": float(val),
        "optimal": optimal,
        "branches": branches,
    }
    return make_plan(cm, ranges_to_stages(cuts, devs), NAME, constraints, notes=notes)
