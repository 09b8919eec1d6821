"""What fused tiles cost and where they are exact (figures in docs/tiling.md, docs/runtimes.md).

    python tools/bench_tiling.py [--size 224] [--reps 15] [-o bench_results/tiling.json]

On a MobileNetV2-like model (float32, random weights) for fused-tile stacks from the
input to several depths and grids 2x2, 3x3, 4x4:
- `macs`: the tiles' MACs (halo recomputation included, `planner.model.tilecost.tile_macs`)
  over the untiled range's;
- `time`: the sum of the tiles' median invoke times over the untiled range's (one
  interpreter thread, XNNPACK, each tile its own interpreter resized to the tile);
- `ulp_xnnpack`, `ulp_builtin`: the largest difference, in float32 ULPs, between the
  stitched tile outputs and the untiled output, with XNNPACK on and with the builtin
  kernels (0 = bit-identical).
Then int8 on the same model and on the ResNet- and YOLO-like recipes: XNNPACK against
the builtin kernels on activations at several cut depths (the largest difference in
LSB and the share of values that differ) and the whole model's invoke time with each.
Medians of `--reps` invokes; the load average is recorded (2 shared cores here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.runtime import (  # noqa: E402
    RuntimeSettings,
    make_interpreter,
    runtime_name,
    runtime_version,
)
from planner.model.cut import cut_range  # noqa: E402
from planner.model.graph import ModelGraph, load_model  # noqa: E402
from planner.model.tile import tile_layout  # noqa
from planner.model.tilecost import tile_macs  # noqa: E402
from planner.modelbuild import recipes  # noqa: E402

DEPTHS = (7, 13, 19, 23, 31)  # ends of tileable ranges [0, end) of the 224 px recipe
GRIDS = ((2, 2), (3, 3), (4, 4))


def run(part: bytes, x: np.ndarray, settings: RuntimeSettings, reps: int = 0
        ) -> tuple[list[np.ndarray], float]:
    """(outputs, median invoke seconds over `reps`) of a part resized to x's shape."""
    it = make_interpreter(part, settings)
    idx = it.get_input_details()[0]["index"]
    it.resize_tensor_input(idx, x.shape, strict=False)
    it.allocate_tensors()
    it.set_tensor(idx, x)
    it.invoke()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    outs = [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]
    return outs, float(np.median(times)) if times else 0.0


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance between two float32 arrays in units in the last place."""
    ia, ib = (v.astype(np.float32).view(np.int32).astype(np.int64) for v in (a, b))
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)  # sign-magnitude to a monotonic line
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return int(np.abs(ia - ib).max())


def tiles_row(graph: ModelGraph, end: int, rows: int, cols: int, x: np.ndarray, reps: int,
              whole: dict[bool, tuple[np.ndarray, float]], part: bytes) -> dict[str, Any]:
    """One depth x grid: MAC and time ratios, ULPs of the stitched output per kernel set."""
    layout = tile_layout(graph, 0, end, rows, cols)
    row: dict[str, Any] = {"end": end, "grid": f"{rows}x{cols}", "stride": layout.halo.stride_y,
                           "halo_before": layout.halo.before_y, "halo_after": layout.halo.after_y}
    untiled = sum(graph.ops[k].macs for k in range(end))
    row["macs"] = sum(tile_macs(graph, 0, end, layout)) / untiled
    for xnn in (True, False):
        (ref, *_), t_whole = whole[xnn]
        stitched = np.empty_like(ref)
        t_tiles = 0.0
        for tile in layout.tiles:
            iy0, iy1, ix0, ix1 = tile.input_region
            oy0, oy1, ox0, ox1 = tile.output_region
            cy0, cy1, cx0, cx1 = tile.crop
            (out, *_), t = run(part, np.ascontiguousarray(x[:, iy0:iy1, ix0:ix1]),
                         RuntimeSettings(1, xnn), reps if xnn else 0)
            stitched[:, oy0:oy1, ox0:ox1] = out[:, cy0:cy1, cx0:cx1]
            t_tiles += t
        row["ulp_xnnpack" if xnn else "ulp_builtin"] = ulps(stitched, ref)
        if xnn:
            row["time"] = t_tiles / t_whole
    return row


def int8_rows(size: int, reps: int) -> list[dict[str, Any]]:
    """XNNPACK vs builtin int8 kernels: LSB differences at cut depths, invoke times."""
    rows = []
    for name, kw in (("mobilenet_v2", {"input_size": size}), ("resnet", {"input_size": 128}),
                     ("yolo", {"input_size": 128})):
        graph = load_model(recipes.RECIPES[name](dtype="int8", **kw))
        n = len(graph.ops)
        worst, differ, total = 0, 0, 0
        for end in sorted({n // 4, n // 2, 3 * n // 4, n - 1, n}):
            part = cut_range(graph, 0, end).data
            shape = graph.tensors[graph.inputs[0]].shape
            x = np.random.default_rng(0).integers(-128, 128, shape, dtype=np.int8)
            xs, _ = run(part, x, RuntimeSettings(1, True))
            bs, _ = run(part, x, RuntimeSettings(1, False))
            for a, b in zip(xs, bs, strict=True):  # every tensor crossing the cut
                worst = max(worst, int(np.abs(a.astype(int) - b.astype(int)).max()))
                differ, total = differ + int((a != b).sum()), total + a.size
        x = np.random.default_rng(0).integers(-128, 128, graph.tensors[graph.inputs[0]].shape,
                                              dtype=np.int8)
        whole = cut_range(graph, 0, n).data
        times = {k: run(whole, x, RuntimeSettings(1, k == "xnnpack"), reps)[1]
                 for k in ("xnnpack", "builtin")}
        rows.append({"model": name, "max_lsb": worst, "share_differing": differ / total,
                     "invoke_xnnpack_s": times["xnnpack"], "invoke_builtin_s": times["builtin"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="input size of the recipe (224)")
    ap.add_argument("--reps", type=int, default=15, help="invokes per median (15)")
    ap.add_argument("-o", default=str(ROOT / "bench_results" / "tiling.json"))
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    graph = load_model(recipes.mobilenet_v2_like(input_size=args.size, dtype="float32"))
    x = np.random.default_rng(0).standard_normal(graph.tensors[graph.inputs[0]].shape
                                                 ).astype(np.float32)
    print(f"{runtime_name()} {runtime_version()}, MobileNetV2-like {args.size} px float32, "
          "tiles from the input; ratios against the untiled range")
    print(f"{'ops':>8} {'grid':>4} {'stride':>6} {'halo':>7} {'MACs':>6} {'time':>6} "
          f"{'ulp xnnpack':>11} {'ulp builtin':>11}")
    tiles = []
    for end in DEPTHS:
        part = cut_range(graph, 0, end).data
        whole = {xnn: run(part, x, RuntimeSettings(1, xnn), args.reps if xnn else 0)
                 for xnn in (True, False)}
        for rows, cols in GRIDS:
            r = tiles_row(graph, end, rows, cols, x, args.reps, whole, part)
            tiles.append(r)
            print(f"{f'[0,{end})':>8} {r['grid']:>4} {r['stride']:>6} "
                  f"{r['halo_before']:>3}/{r['halo_after']:<3} {r['macs']:5.2f}x {r['time']:5.2f}x "
                  f"{r['ulp_xnnpack']:>11} {r['ulp_builtin']:>11}")
    int8 = int8_rows(args.size, args.reps)
    print("int8, XNNPACK against the builtin kernels (activations at n/4, n/2, 3n/4, n-1, n ops)")
    for r in int8:
        print(f"{r['model']:>12}: max {r['max_lsb']} LSB, {r['share_differing']:.0%} of values "
              f"differ; invoke {r['invoke_xnnpack_s'] * 1e3:.2f} ms (xnnpack) vs "
              f"{r['invoke_builtin_s'] * 1e3:.2f} ms (builtin), 1 thread")
    out = {"runtime": f"{runtime_name()} {runtime_version()}", "numpy": np.__version__,
           "size": args.size, "tiles": tiles, "int8_xnnpack_vs_builtin": int8,
           "load_avg_1m": [load0, os.getloadavg()[0]], "cpus": os.cpu_count()}
    Path(args.o).parent.mkdir(parents=True, exist_ok=True)
    Path(args.o).write_text(json.dumps(out, indent=2) + "\n")
    print(f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f}; wrote {args.o}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
