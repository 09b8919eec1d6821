"""Several tile interpreters in one process: 1 vs 2 interpreter threads each (docs/runtimes.md).

    python tools/bench_tile_threads.py [--rounds 20]
    TILEFLEET_RUNTIME=tflite_runtime $TFLITE_VENV/bin/python tools/bench_tile_threads.py

(the second form uses the numpy<2 virtualenv `tools/test_tflite_runtime.sh` makes, in
$TFLITE_VENV, by default /tmp/tilefleet-tflite-venv).
A node runs each tile stage on its own worker thread with its own interpreter, so the
tiles of one frame invoke at the same time. This builds the first 13 ops of the 224 px
MobileNetV2-like recipe (float32), one interpreter per tile of a 2x2 grid, and times a
round (every tile invoked once) two ways: in turn from one thread, and concurrently from
one Python thread per tile, each with 1 and with 2 interpreter threads. Prints the
median and the worst round; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.runtime import (  # noqa: E402
    RuntimeSettings,
    make_interpreter,
    runtime_name,
    runtime_version,
)
from planner.model.cut import cut_range  # noqa: E402
from planner.model.graph import load_model  # noqa: E402
from planner.model.tile import tile_layout  # noqa: E402
from planner.modelbuild import recipes  # noqa: E402


def tile_interpreters(part: bytes, regions: list[tuple[int, ...]], threads: int) -> list[Any]:
    """One allocated interpreter per tile, resized to its input window and fed once."""
    out = []
    for y0, y1, x0, x1 in regions:
        it = make_interpreter(part, RuntimeSettings(threads=threads))
        idx = it.get_input_details()[0]["index"]
        shape = (1, y1 - y0, x1 - x0, 3)
        it.resize_tensor_input(idx, shape, strict=False)
        it.allocate_tensors()
        it.set_tensor(idx, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        it.invoke()
        out.append(it)
    return out


def rounds(its: list[Any], n: int, concurrent: bool) -> list[float]:
    """Seconds per round of invoking every interpreter once."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        if concurrent:
            workers = [threading.Thread(target=it.invoke) for it in its]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        else:
            for it in its:
                it.invoke()
        times.append(time.perf_counter() - t)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    graph = load_model(recipes.mobilenet_v2_like(input_size=224, dtype="float32"))
    part = cut_range(graph, 0, 13).data
    regions = [t.input_region for t in tile_layout(graph, 0, 13, 2, 2).tiles]
    print(f"{runtime_name()} {runtime_version()}, numpy {np.__version__}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.2f}: 4 tiles of ops [0, 13), 224 px float32")
    for concurrent in (False, True):
        for threads in (1, 2):
            ts = rounds(tile_interpreters(part, regions, threads), args.rounds, concurrent)
            how = "concurrently" if concurrent else "in turn     "
            print(f"  {how} {threads} interpreter thread(s) each: median "
                  f"{statistics.median(ts) * 1e3:8.2f} ms, worst {max(ts) * 1e3:8.2f} ms per round")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
