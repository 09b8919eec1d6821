"""Time parts already in the store: median seconds per part over several repetitions.

A repetition is one invoke, or under a cgroup CPU quota a batch of back-to-back invokes
spanning several CFS periods (node/pacing.py): a single short invoke can run inside the
period's remaining quota at full speed, which once made throttled boards profile 2x
faster than they sustain. A warm-up of the same length first uses up the quota banked
while the node was idle; a batch counts at least its CPU time over the quota (`_timed`),
and the part's figure is the mean of its batches (they run back to back, so what one
gains from where the period boundaries fall the next one loses), not their median. Padded
runs (`--emulate-speed`) are timed with their padding.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import numpy as np

from node import pacing
from node.errors import StoreError
from node.runtime import RuntimeSettings, make_interpreter
from node.store import Store
from node.wire.codes import Code
from node.wire.results import ProfileResult

log = logging.getLogger(__name__)


def random_input(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator
                 ) -> np.ndarray:
    """Deterministic random data for one input tensor."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape,
                            dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(shape).astype(dtype)


def time_part(model: bytes, settings: RuntimeSettings, repetitions: int, warmup: int
              ) -> list[float]:
    """Seconds per invoke of one part on random inputs, one figure per repetition."""
    interp = make_interpreter(model, settings)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], random_input(tuple(d["shape"]), d["dtype"], rng))

    def invoke() -> None:
        t = time.perf_counter()
        interp.invoke()
        pacing.pad(time.perf_counter() - t)

    for _ in range(warmup):
        invoke()
    span = pacing.min_timing_s()
    batch = 1
    if span > 0:  # warm up for one span (uses up banked quota), batch size from its pace
        n, t = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t < span:
            invoke()
            n += 1
        batch = max(1, int(np.ceil(span * n / (time.perf_counter() - t))))
    q = pacing.cpu_quota()
    cpus = q[0] / q[1] if q else None
    return [_timed(invoke, batch, cpus) / batch for _ in range(repetitions)]


def _timed(invoke: Callable[[], None], n: int, cpus: float | None = None) -> float:
    """Seconds for n invokes; under a quota of `cpus` cores at least CPU time / cpus.

    CFS enforces a quota at scheduler ticks (4 ms at HZ=250), so a group below a tick's
    worth per period runs in lumps of a tick every tick/cpus seconds; a batch of a few
    periods can still catch more or less than its share. The CPU the invokes used over
    the quota is what they take sustained, whatever the lumps; wall time is kept when
    it is longer (work that cannot use the whole quota, e.g. one thread of several).
    """
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        invoke()
    wall = time.perf_counter() - t
    return max(wall, (time.process_time() - c) / cpus) if cpus else wall


def summarize(times: list[float]) -> float:
    """A part's figure from its repetitions: mean of batches under a quota, else median."""
    return statistics.fmean(times) if pacing.min_timing_s() > 0 else statistics.median(times)


def profile(store: Store, parts: tuple[str, ...], settings: RuntimeSettings,
            repetitions: int = 5, warmup: int = 1) -> ProfileResult:
    """Median and every timed run of each part (StoreError `missing_parts` with `missing`)."""
    missing = [p for p in parts if not store.has(p)]
    if missing:
        raise StoreError(f"profile: {len(missing)} part(s) not in the store: "
                         f"{', '.join(m[:12] for m in missing)}", code=Code.MISSING_PARTS,
                         details={"missing": missing})
    medians, all_times = {}, {}
    for sha in parts:
        times = time_part(store.read_verified(sha), settings, repetitions, warmup)
        medians[sha] = summarize(times)
        all_times[sha] = times
    return ProfileResult(medians, {s: tuple(t) for s, t in all_times.items()}, settings.label())
