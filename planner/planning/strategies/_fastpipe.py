"""Throughput feasibility when all device-to-device links are equal: one number per state.

With one link value, whether a cut can carry the live tensors in time T no longer depends
on which devices sit on either side, so among ways to cover ops [0, p) with a given
multiset of devices the largest p dominates: every continuation from a smaller p is
available from the larger one (ranges only shrink, pinned ranges are already covered).
F[counts] = furthest covered position; counts are flattened and processed by layer
(number of devices used), each layer one numpy gather per class.
"""

from __future__ import annotations

import itertools

import numpy as np

_EPS = 1e-12


def _layers(counts: list[int], max_nodes: int):
    """Flat index, per-class predecessor index and layer of every count vector."""
    k = len(counts)
    strides = [1] * k
    for j in range(k - 2, -1, -1):
        strides[j] = strides[j + 1] * (counts[j + 1] + 1)
    vecs = np.array(list(itertools.product(*[range(c + 1) for c in counts])), dtype=int).reshape(
        -1, k
    )
    total = vecs.sum(axis=1)
    layers = []
    for s in range(1, max_nodes + 1):
        idx = np.nonzero(total == s)[0]
        if idx.size == 0:
            break
        layers.append((idx, vecs[idx]))
    return np.array(strides), len(vecs), layers


def fast_feasible(cm, cl, rg, T: float, max_nodes: int, want_path: bool):
    """Feasibility of period T (uniform links); a path [(class, a, b)] when asked."""
    n, k = cm.n, len(cl.reps)
    t = T * (1 + _EPS) + 1e-15
    send = cl.send_times(0, 0, cm.cut_bytes) if cl.links[0][0] is not None else \
        cl.send_times(0, 1 % k, cm.cut_bytes)
    valid = send <= t
    valid[n] = True
    prev_valid = np.maximum.accumulate(np.where(valid, np.arange(n + 1), -1))
    nxt = []
    for j in range(k):
        lo, hi = rg.interval(j, T)
        b = prev_valid[np.clip(hi, 0, n)]
        b = np.where((hi >= lo) & (b >= lo), b, -1)
        if cm.transfer(cm.profile.source, cl.reps[j], cm.cut_bytes[0]) > t:
            b[0] = -1
        nxt.append(np.append(b, -1))  # index -1 (unreachable) maps to -1
    strides, size, layers = _layers(cl.counts, max_nodes)
    F = np.full(size, -1, dtype=int)
    F[0] = 0
    par = np.full(size, -1, dtype=int)  # class that extended the state, -2 = copied
    for idx, vecs in layers:
        best = np.full(idx.size, -1, dtype=int)
        who = np.full(idx.size, -1, dtype=int)
        for j in range(k):
            has = vecs[:, j] > 0
            src = np.where(has, idx - strides[j], 0)
            fp = F[src]
            grow = np.where(has, nxt[j][fp], -1)
            copy = np.where(has, fp, -1)
            for cand, tag in ((grow, j), (copy, -2 - j)):
                better = cand > best
                best = np.where(better, cand, best)
                who = np.where(better, tag, who)
        F[idx] = best
        par[idx] = who
        if (best == n).any():
            if not want_path:
                return True
            return _walk(F, par, strides, int(idx[np.argmax(best == n)]))
    return None


def _walk(F, par, strides, s: int):
    """Stages [(class, a, b)] from the parent marks."""
    out = []
    while s != 0:
        tag = int(par[s])
        j = tag if tag >= 0 else -2 - tag
        prev = s - int(strides[j])
        if tag >= 0:
            out.append((j, int(F[prev]), int(F[s])))
        s = prev
    return out[::-1]
