"""Measure a deployment: per-frame latency, pipelined throughput, exactness vs a reference."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import numpy as np

from planner.fleet.deployment import Deployment
from planner.fleet.reference import LocalModel, mismatches, random_inputs


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_bench(dep: Deployment, frames: int, window: int = 8, reference: bytes | None = None,
              distinct: int = 8, seed: int = 0) -> dict[str, Any]:
    """The `bench --json` document: frames, delivered, errors, mismatches, latency, fps.

    `distinct` different random inputs are cycled through the stream, so the reference
    runs once per distinct input; every result is compared (np.array_equal).
    """
    inputs = [random_inputs(dep.record.model["inputs"], seed + k)
              for k in range(max(1, min(distinct, frames)))]
    want = None
    if reference is not None:
        local = LocalModel(reference)
        want = [local.run(x) for x in inputs]
    lat: list[float] = []
    lock = threading.Lock()
    errors, bad = 0, 0
    first_error = ""

    def stamp(fut: Any, t: float) -> None:
        if fut.exception() is None:
            with lock:
                lat.append(time.perf_counter() - t)

    def stream():
        for i in range(frames):
            x = inputs[i % len(inputs)]
            t = time.perf_counter()
            fut = dep.submit(x)
            fut.add_done_callback(lambda f, t=t: stamp(f, t))
            yield fut

    t0 = time.perf_counter()
    pending: list[Any] = []
    results: list[Any] = []
    for fut in stream():
        pending.append(fut)
        if len(pending) >= window:
            results.append(_get(pending.pop(0)))
    results.extend(_get(f) for f in pending)
    wall = time.perf_counter() - t0
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            errors += 1
            first_error = first_error or str(r)
        elif want is not None and mismatches(r, want[i % len(want)]):
            bad += 1
    delivered = frames - errors
    doc = {"frames": frames, "delivered": delivered, "errors": errors,
           "mismatches": bad if want is not None else None,
           "latency_p50_s": _pct(lat, 0.5), "latency_p95_s": _pct(lat, 0.95),
           "throughput_fps": delivered / wall if wall > 0 else 0.0, "window": window,
           "wall_s": wall}
    if first_error:
        doc["first_error"] = first_error
    doc["client"] = dep.stats()
    return doc


def _get(fut: Any) -> dict[str, np.ndarray] | Exception:
    try:
        return fut.result()
    except Exception as exc:  # every request gets its result or an error
        return exc


def latency(dep: Deployment, frames: int = 20, seed: int = 0) -> dict[str, float]:
    """Unpipelined per-frame latency (one frame in flight): p50, p95, mean."""
    x = random_inputs(dep.record.model["inputs"], seed)
    dep.infer(x)  # warm-up: connections, first allocation
    times = []
    for _ in range(frames):
        t = time.perf_counter()
        dep.infer(x)
        times.append(time.perf_counter() - t)
    return {"latency_s": statistics.median(times), "latency_p95_s": _pct(times, 0.95),
            "latency_mean_s": statistics.fmean(times)}
