"""Time parts already in the store: median seconds per part over several repetitions."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import numpy as np

from node.errors import StoreError
from node.runtime import RuntimeSettings, make_interpreter
from node.store import Store
from node.wire.codes import Code

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
    """Seconds of each timed invoke of one part on random inputs."""
    interp = make_interpreter(model, settings)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], random_input(tuple(d["shape"]), d["dtype"], rng))
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(repetitions):
        t = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t)
    return times


def profile(store: Store, parts: tuple[str, ...], settings: RuntimeSettings,
            repetitions: int = 5, warmup: int = 1) -> dict[str, Any]:
    """{"median_s": {sha: s}, "times_s": {sha: [..]}, "missing": [...], "settings": label}."""
    missing = [p for p in parts if not store.has(p)]
    if missing:
        raise StoreError(f"profile: {len(missing)} part(s) not in the store: "
                         f"{', '.join(m[:12] for m in missing)}", code=Code.MISSING_PARTS,
                         details={"missing": missing})
    medians, all_times = {}, {}
    for sha in parts:
        times = time_part(store.read_verified(sha), settings, repetitions, warmup)
        medians[sha] = statistics.median(times)
        all_times[sha] = times
    return {"median_s": medians, "times_s": all_times, "settings": settings.label()}
