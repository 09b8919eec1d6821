"""Benchmark the cutter: a ~15 MB model cut into 4 parts; wall time and peak memory.

Usage: python tools/bench_cut.py [--mb 15] [--parts 4] [--out bench_results/cut.json]
Reading and cutting run in fresh subprocesses, once for ru_maxrss (peak RSS above the
RSS after imports) and once under tracemalloc (Python and numpy allocations), both from
reading the file to the last packed part: the figures include the model's own bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, tracemalloc
from planner.model.cut import cut_at
from planner.model.graph import ModelGraph

def status_kib(key):
    # VmHWM, not ru_maxrss: after fork+exec ru_maxrss still holds the parent's peak.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

path, parts, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
base_rss = status_kib("VmRSS")  # after imports; the model is not read yet
if mode == "trace":
    tracemalloc.start()
t0 = time.perf_counter()
graph = ModelGraph.load(path)
t1 = time.perf_counter()
n, w = len(graph.ops), [op.weight_bytes for op in graph.ops]
# Cut points that split the weights evenly, so every part packs a similar share.
total, acc, points = sum(w), 0, []
for i, b in enumerate(w):
    acc += b
    if len(points) < parts - 1 and acc >= total * (len(points) + 1) / parts and 0 < i + 1 < n:
        points.append(i + 1)
t2 = time.perf_counter()
result = cut_at(graph, points)
t3 = time.perf_counter()
fig = {"points": points, "part_bytes": [len(p.data) for p in result],
       "read_s": t1 - t0, "cut_s": t3 - t2}
if mode == "trace":
    fig["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
else:
    fig["rss_peak_above_baseline_bytes"] = max(status_kib("VmHWM") - base_rss, 0) * 1024
print(json.dumps(fig))
"""

def build_model(target_mb: float) -> bytes:
    """A VGG-like float32 stack of wide 3x3 convs whose weights add up to ~target_mb."""
    from planner.modelbuild import GraphBuilder

    width = 256
    per_layer = width * width * 9 * 4
    layers = max(2, math.ceil(target_mb * 1e6 / per_layer) + 1)  # the first conv (3->width) is tiny
    b = GraphBuilder("bench_vgg")
    x = b.input((1, 16, 16, 3))
    x = b.conv2d(x, width, 3, activation="RELU")
    for i in range(layers - 1):
        x = b.conv2d(x, width, 3, activation="RELU")
        if i % 3 == 2:
            x = b.max_pool(x, 2, 2) if x.shape[1] > 2 else x
    b.output(b.mean(x))
    return b.build("float32")


def main() -> int:
    """Build, cut in a subprocess, print and save the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=15.0, help="model size to build (MB)")
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--out", default="bench_results/cut.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = build_model(args.mb)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.tflite"
        path.write_bytes(data)
        runs = [json.loads(subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(args.parts), mode],
            capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            for mode in ("rss", "trace")]
    fig = {**runs[1], **runs[0]}  # times from the run without tracemalloc's overhead
    fig["tracemalloc_peak_bytes"] = runs[1]["tracemalloc_peak_bytes"]
    size = len(data)
    fig.update({"model_bytes": size, "parts": args.parts, "build_s": build_s,
                "tracemalloc_peak_x_model": fig["tracemalloc_peak_bytes"] / size,
                "rss_peak_x_model": fig["rss_peak_above_baseline_bytes"] / size})
    print(f"model {size / 1e6:.1f} MB, cut into {args.parts} parts at {fig['points']}")
    print(f"read {fig['read_s'] * 1e3:.1f} ms, cut {fig['cut_s'] * 1e3:.1f} ms "
          f"(parts {[round(b / 1e6, 2) for b in fig['part_bytes']]} MB)")
    print(
        f"peak while reading + cutting: tracemalloc {fig['tracemalloc_peak_bytes'] / 1e6:.1f} MB "
        f"({fig['tracemalloc_peak_x_model']:.2f}x model), RSS above baseline "
        f"{fig['rss_peak_above_baseline_bytes'] / 1e6:.1f} MB "
        f"({fig['rss_peak_x_model']:.2f}x model)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fig, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
