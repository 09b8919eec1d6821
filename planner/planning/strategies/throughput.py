"""Strategy 'throughput': minimum pipeline period (bottleneck stage), optimal under the cost model.

Problem solved exactly: choose cuts 0 = c0 < ... < cm = n and pairwise distinct devices
d1..dm (m <= --max-nodes) minimising the period

    max over k of  compute(d_k, [c_{k-1}, c_k)) + stage_overhead(d_k),  the source's work,
                   send(d_{k-1} -> d_k, live bytes at c_{k-1}),  send(d_k -> sink, outputs
                   of stage k) (d_0 = source),  per shared host: its devices' busy / cores

subject to every range fitting its device's memory and pinned ops running on their node.
Each route counts as its own channel (the simulator also serialises two routes sharing a
directed link: only when a stage sends early outputs to a sink that hosts the next stage).

The general problem is NP-hard (heterogeneous chain partitioning with free processor
order, Pinar et al. 2008), so the exact method is exponential in the number of device
*classes*, not devices: devices with identical per-op times, memory, overhead and links
are interchangeable. Binary search over the finite set of candidate periods; feasibility
of a period T is a DP over (devices used per class, class of the last stage) holding the
set of positions where the next stage may start. When every link between candidate
devices is the same, the largest reachable position dominates and the state shrinks to
one number per count vector (`_fast_feasible`). Beyond STATE_LIMIT states the strategy
falls back to a greedy feasibility test and says so in the plan's notes.

Shared hosts (more devices than cores on one `host`) add a term of the whole chain, H =
the host's busy and intra-host transfer seconds over its cores. For a period T,
`_hostpipe.min_host_work` finds the least H among chains fitting T (a shortest path over
the same states); with T1 the smallest candidate period where H(T1) <= T1 and T0 the one
below it, the optimum is min(T1, H(T0)): below T1 the host term dominates and H only falls
as T grows. Exact with one shared host among the candidates (any number of other devices);
with several, the DP minimises the sum of their terms and the host-blind DP per stage
count is tried too (a heuristic: notes say optimal false). Over STATE_LIMIT states or
`_hostpipe.WORK_LIMIT` DP work, the per-stage-count heuristic alone is used.

The period is the simulator's bound (`throughput_bound_fps`, busiest resource). Its
stream figure (`throughput_fps`) reaches it on chains of devices with hosts of their own;
where devices share a host it can stay below: stages do not split across cores, and a
device sends to others on its host one message at a time, which the period leaves out
(it binds when a stage sends early outputs to a sink on its host as well as its
activations to the next stage there). `auto` compares stream figures. Outside this
problem's plan space: DADS partitions (a device holding several op ranges, direct
routes) and tile stages.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from planner.errors import PlanError
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Plan
from planner.planning.planbuild import make_plan, ranges_to_stages
from planner.planning.profile import Profile
from planner.planning.strategies._classes import Classes, device_classes
from planner.planning.strategies._common import allowed, candidates, setup
from planner.planning.strategies._fastpipe import fast_feasible
from planner.planning.strategies._hostpipe import HostWork, TooBig, min_host_work
from planner.planning.strategies.latency import no_fit_error

NAME = "throughput"
STATE_LIMIT = 300_000
_EPS = 1e-12


def chain_period(cm: CostModel, cuts: list[int], devices: list[str]) -> float:
    """The period formula of the module docstring for one chain."""
    p, prev = cm.profile, cm.profile.source
    worst = cm.overhead(p.source)
    busy, sends = {p.source: worst}, []
    for a, b, d in zip(cuts, cuts[1:], devices, strict=False):
        stage = cm.stage_seconds(d, a, b)
        busy[d] = busy.get(d, 0.0) + stage
        sends += [
            (prev, d, cm.transfer(prev, d, cm.cut_bytes[a])),
            (d, p.sink, cm.transfer(d, p.sink, cm.out_bytes(a, b))),
        ]
        worst = max(worst, stage, sends[-2][2], sends[-1][2])
        prev = d
    return max([worst, *cm.host_bound(busy, sends).values()])


class _Ranges:
    """Per class and period T: the interval [lo(a), hi(a)] of ends for a stage starting at a."""

    def __init__(self, cm: CostModel, cl: Classes) -> None:
        self.cm, self.cl, n = cm, cl, cm.n
        self.P = [cm.prefix[r] for r in cl.reps]
        self.ovh = [cm.profile.devices[r].stage_overhead_s for r in cl.reps]
        self.mem = [cm.memory_reach(r) for r in cl.reps]
        self.out = cm.out_prefix
        sink = cm.profile.sink
        self.sink_link = [None if r == sink else cm.profile.link(r, sink) for r in cl.reps]
        ok = cl.allowed
        nb = np.full((n + 1, len(cl.reps)), n, dtype=int)  # first op >= a not allowed
        for a in range(n - 1, -1, -1):
            nb[a] = np.where(ok[a], nb[a + 1], a)
        self.next_bad = nb
        self.idx = np.arange(n + 1)

    def interval(self, i: int, T: float) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) arrays over starts a; empty where lo > hi."""
        n, P, outp = self.cm.n, self.P[i], self.out
        t = T * (1 + _EPS) + 1e-15
        hi = np.searchsorted(P, P + (t - self.ovh[i]), side="right") - 1
        hi = np.minimum(hi, self.mem[i])
        hi = np.minimum(hi, self.next_bad[:, i])
        ln = self.sink_link[i]
        if ln is not None:
            cap = -1.0 if t < ln.latency else (t - ln.latency) * ln.bandwidth
            hi = np.minimum(
                hi, np.searchsorted(outp, outp + max(cap, 0.0) * (1 + _EPS), side="right") - 1
            )
        lo = self.idx + 1
        pin = self.cl.pin_span[i]
        if pin is not None:
            lo = np.where(self.idx <= pin[0], np.maximum(lo, pin[1]), n + 1)
        hi = np.minimum(hi, n)
        return lo, hi


def _union(starts: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Positions b covered by [lo(a), hi(a)] for some start a in the boolean set `starts`."""
    a = np.nonzero(starts & (lo <= hi))[0]
    diff = np.zeros(n + 2, dtype=int)
    np.add.at(diff, lo[a], 1)
    np.add.at(diff, hi[a] + 1, -1)
    return np.cumsum(diff[: n + 1]) > 0


def _feasible(cm: CostModel, cl: Classes, rg: _Ranges, T: float, max_nodes: int, want_path: bool):
    """General DP: states (counts, last class) -> starts; returns a path [(class, a, b)] or None."""
    n, k = cm.n, len(cl.reps)
    t = T * (1 + _EPS) + 1e-15
    send_ok = [[cl.send_times(i, j, cm.cut_bytes) <= t for j in range(k)] for i in range(k)]
    src_ok = [
        cm.transfer(cm.profile.source, r, cm.cut_bytes[0]) <= T * (1 + _EPS) + 1e-15
        for r in cl.reps
    ]
    ivs = [rg.interval(i, T) for i in range(k)]
    layer: dict = {}
    start0 = np.zeros(n + 1, dtype=bool)
    start0[0] = True
    for j in range(k):
        if src_ok[j] and cl.counts[j] > 0:
            c = tuple(1 if x == j else 0 for x in range(k))
            layer[(c, j)] = start0.copy()
    history = [layer]
    seen = len(layer)
    for _ in range(max_nodes):
        nxt: dict = {}
        for (c, i), starts in layer.items():
            ends = _union(starts, *ivs[i], n)
            if ends[n]:
                return _path(cl, history, (c, i), ivs, send_ok) if want_path else True
            for j in range(k):
                if c[j] >= cl.counts[j] or sum(c) >= max_nodes:
                    continue
                valid = ends & send_ok[i][j]
                valid[n] = False
                if not valid.any():
                    continue
                key = (tuple(x + (x_ == j) for x_, x in enumerate(c)), j)
                if key in nxt:
                    nxt[key] |= valid
                else:
                    nxt[key] = valid
        seen += len(nxt)
        if seen > STATE_LIMIT:
            raise _TooBig()
        if not nxt:
            return None
        layer = nxt
        history.append(layer)
    return None


def _path(cl: Classes, history, final, ivs, send_ok):
    """Walk back from a state whose stage can reach the end: [(class, a, b)] in order."""
    (c, i), b = final, None
    lo, hi = ivs[i]
    starts = history[-1][final]
    a = int(max(x for x in np.nonzero(starts)[0] if lo[x] <= len(lo) - 1 <= hi[x]))
    out = [(i, a, len(lo) - 1)]
    for depth in range(len(history) - 2, -1, -1):
        prev_c = tuple(x - (k == i) for k, x in enumerate(c))
        found = None
        for (pc, pi), pstarts in history[depth].items():
            if pc != prev_c or not send_ok[pi][i][a]:
                continue
            plo, phi = ivs[pi]
            for x in np.nonzero(pstarts)[0]:
                if plo[x] <= a <= phi[x]:
                    found = (pi, int(x))
                    break
            if found:
                break
        b = a
        i, a = found
        c = prev_c
        out.append((i, a, b))
    return out[::-1]


class _TooBig(Exception):
    pass


def _greedy(cm: CostModel, cl: Classes, rg: _Ranges, T: float, max_nodes: int, want_path: bool):
    """Fallback feasibility (not exact): from each cut take the unused class reaching furthest."""
    n, k = cm.n, len(cl.reps)
    t = T * (1 + _EPS) + 1e-15
    ivs = [rg.interval(i, T) for i in range(k)]
    left, pos, prev, path = list(cl.counts), 0, None, []
    while pos < n and len(path) < max_nodes:
        best = None
        for j in range(k):
            lo, hi = ivs[j]
            send = cm.transfer(cm.profile.source, cl.reps[j], cm.cut_bytes[0]) if prev is None \
                else cl.send_times(prev, j, cm.cut_bytes[pos:pos + 1])[0]
            if left[j] == 0 or send > t or lo[pos] > hi[pos]:
                continue
            if best is None or hi[pos] > best[1]:
                best = (j, int(hi[pos]))
        if best is None:
            return None
        path.append((best[0], pos, best[1]))
        left[best[0]] -= 1
        prev, pos = best[0], best[1]
    return (path if want_path else True) if pos == n else None


def _candidates(cm: CostModel, cl: Classes) -> np.ndarray:
    """Every value the period can take: range computes, route sends."""
    vals = []
    vals.append(np.array([cm.overhead(cm.profile.source)]))
    for r in cl.reps:
        P = cm.prefix[r]
        vals.append(
            (P[None, :] - P[:, None])[np.triu_indices(cm.n + 1, 1)]
            + cm.profile.devices[r].stage_overhead_s
        )
        outp = cm.out_prefix
        out = np.unique((outp[None, :] - outp[:, None])[np.triu_indices(cm.n + 1, 1)])
        vals.append(np.array([cm.transfer(r, cm.profile.sink, x) for x in out]))
        vals.append(np.array([cm.transfer(cm.profile.source, r, cm.cut_bytes[0])]))
    for i in range(len(cl.reps)):
        for j in range(len(cl.reps)):
            vals.append(cl.send_times(i, j, cm.cut_bytes[1:cm.n]))
    return np.unique(np.concatenate(vals))


def solve(cm: CostModel, names: list[str], constraints: Constraints):
    """Optimal (period, cuts, devices, optimal flag, method) under the constraints."""
    cl = device_classes(cm, names, allowed(cm, names, constraints), constraints)
    max_nodes = min(constraints.max_nodes or len(names), len(names), cm.n)
    hosts = {h for h, (c, ns) in cm.profile.hosts().items() if c < len(ns) and set(ns) & set(names)}
    if not hosts:
        return _solve(cm, names, cl, max_nodes)
    try:
        found = _solve_hosts(cm, names, cl, max_nodes, hosts)
    except TooBig:
        found = None
    if found is not None and len(hosts) == 1:
        return found
    other = _per_stage_count(cm, names, cl, max_nodes)
    if found is None or other[0] < found[0] * (1 - 1e-12):
        return other
    return found[0], found[1], found[2], False, found[4] + "+several-hosts"


def _solve_hosts(cm: CostModel, names: list[str], cl: Classes, max_nodes: int, hosts: set[str]):
    """The shared-host search of the module docstring: exact for one shared host."""
    rg, hw = _Ranges(cm, cl), HostWork(cm, cl, hosts)
    cand = _candidates(cm, cl)
    cand = cand[cand >= cm.overhead(cm.profile.source)]

    def least(i: int):
        return min_host_work(cm, cl, rg, hw, float(cand[i]), max_nodes, STATE_LIMIT)

    def fits(i: int, found) -> bool:
        return found[0] <= cand[i] * (1 + _EPS) + 1e-15

    top = least(len(cand) - 1)
    if top[1] is None:
        raise no_fit_error(cm, names)
    tried = [top]
    if fits(len(cand) - 1, top):
        lo, hi, at = 0, len(cand) - 1, {len(cand) - 1: top}
        while lo < hi:
            mid = (lo + hi) // 2
            at[mid] = least(mid)
            lo, hi = (lo, mid) if fits(mid, at[mid]) else (mid + 1, hi)
        tried = [at[lo]] + ([at.get(lo - 1) or least(lo - 1)] if lo > 0 else [])
    pool = defaultdict(list, {i: list(ds) for i, ds in enumerate(cl.members)})
    best = None
    for _, path in tried:
        if path is None:
            continue
        members = {i: list(ds) for i, ds in pool.items()}
        devs = [members[i].pop(0) for i, _a, _b in path]
        cuts = [0] + [b for _i, _a, b in path]
        period = float(chain_period(cm, cuts, devs))
        if best is None or period < best[0]:
            best = (period, [int(c) for c in cuts], devs, True, "dp-host-work")
    return best


def _per_stage_count(cm: CostModel, names: list[str], cl: Classes, max_nodes: int):
    """The host-blind DP once per stage count, best chain under the full period (a heuristic)."""
    best, err = None, None
    for m in range(1, max_nodes + 1):
        try:
            _, cuts, devs, optimal, method = _solve(cm, names, cl, m)
        except PlanError as exc:
            err = err or exc
            continue
        period = chain_period(cm, cuts, devs)
        if best is None or period < best[0] * (1 - 1e-12):
            best = (period, cuts, devs, optimal, method)
    if best is None:
        raise err or no_fit_error(cm, names)
    return best[0], best[1], best[2], False, best[4] + "+per-stage-count"


def _solve(cm: CostModel, names: list[str], cl: Classes, max_nodes: int):
    """The DP of the module docstring without the shared-host term, for at most max_nodes stages."""
    rg = _Ranges(cm, cl)
    if cl.uniform:
        test, method, optimal = fast_feasible, "dp-max-position", True
    else:
        test, method, optimal = _feasible, "dp-start-sets", True
    cand = _candidates(cm, cl)
    cand = cand[cand >= cm.overhead(cm.profile.source)]  # the source's work bounds every period
    try:
        if not test(cm, cl, rg, cand[-1], max_nodes, False):
            raise no_fit_error(cm, names)
    except _TooBig:
        test, method, optimal = _greedy, "greedy-fallback", False
        if not test(cm, cl, rg, cand[-1], max_nodes, False):
            raise no_fit_error(cm, names) from None
    lo, hi = 0, len(cand) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            ok = test(cm, cl, rg, cand[mid], max_nodes, False)
        except _TooBig:
            test, method, optimal = _greedy, "greedy-fallback", False
            lo, hi = 0, len(cand) - 1
            continue
        if ok:
            hi = mid
        else:
            lo = mid + 1
    path = test(cm, cl, rg, cand[lo], max_nodes, True)
    if path is None:
        raise PlanError("throughput: internal error, feasible period lost on reconstruction")
    pool = defaultdict(list, {i: list(ds) for i, ds in enumerate(cl.members)})
    cuts, devs = [0], []
    for i, _a, b in path:
        devs.append(pool[i].pop(0))
        cuts.append(b)
    return float(cand[lo]), cuts, devs, optimal, method


def plan(graph, profile: Profile, constraints: Constraints) -> Plan:
    """Minimum-period layer-range pipeline (see module docstring for the exact problem)."""
    cm = setup(graph, profile, constraints)
    names = candidates(cm, constraints)
    period, cuts, devs, optimal, method = solve(cm, names, constraints)
    notes = {
        "problem": "min pipeline period, contiguous ranges on distinct devices, memory per device",
        "dp_period_s": float(period),
        "dp_throughput_fps": 1.0 / period if period > 0 else math.inf,
        "optimal": optimal,
        "method": method,
    }
    return make_plan(cm, ranges_to_stages(cuts, devs), NAME, constraints, notes=notes)
