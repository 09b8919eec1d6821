"""Benchmark the in-process model builder: MobileNetV2-like 224x224 build time (the < 2 s target).

Usage: python tools/bench_modelbuild.py [--repeat 5] [--all] [--out bench_results/modelbuild.json]

"cold" is a fresh interpreter: `import planner.modelbuild` and the first build, each
dtype in its own subprocess. "warm" is the min and median of --repeat builds in this
process. --all also builds every recipe once at its default size (VGG16 takes a while:
138M parameters). The machine's load average is recorded: other work on the two cores
here changes the figures several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

COLD = r"""
import sys, time
t0 = time.perf_counter()
from planner.modelbuild import mobilenet_v2_like
t1 = time.perf_counter()
mobilenet_v2_like(224, dtype=sys.argv[1])
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def describe(model: bytes) -> dict:
    """Op count, op histogram and weight bytes, read without unpacking the buffers."""
    from ai_edge_litert import schema_py_generated as fb

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    root = fb.Model.GetRootAs(model, 0)
    codes = [names[root.OperatorCodes(i).BuiltinCode()] for i in range(root.OperatorCodesLength())]
    sub = root.Subgraphs(0)
    ops = Counter(codes[sub.Operators(i).OpcodeIndex()] for i in range(sub.OperatorsLength()))
    weight_bytes = sum(root.Buffers(i).DataLength() for i in range(root.BuffersLength()))
    return {
        "ops": sum(ops.values()),
        "op_types": dict(ops),
        "bytes": len(model),
        "weight_bytes": weight_bytes,
    }


def cold(dtype: str) -> dict:
    """Import + first build in a fresh Python process."""
    out = subprocess.run(
        [sys.executable, "-c", COLD, dtype], capture_output=True, text=True, check=True
    ).stdout.split()
    return {"import_s": float(out[0]), "first_build_s": float(out[1])}


def warm(dtype: str, repeat: int) -> dict:
    """Min and median of `repeat` builds in this process."""
    from planner.modelbuild import mobilenet_v2_like

    mobilenet_v2_like(224, dtype=dtype)  # warm caches, BLAS threads, the runtime library
    times, model = [], b""
    for _ in range(repeat):
        t = time.perf_counter()
        model = mobilenet_v2_like(224, dtype=dtype)
        times.append(time.perf_counter() - t)
    return {
        "min_s": min(times),
        "median_s": statistics.median(times),
        "runs": times,
        **describe(model),
    }


def all_recipes() -> dict:
    """Every recipe at its default size, float32 and int8, built once."""
    from planner.modelbuild import RECIPES

    out = {}
    for name, fn in RECIPES.items():
        for dtype in ("float32", "int8"):
            t = time.perf_counter()
            model = fn(dtype=dtype)
            out[f"{name}/{dtype}"] = {"build_s": time.perf_counter() - t, **describe(model)}
            print(f"  {name:14s} {dtype:8s} {out[f'{name}/{dtype}']['build_s']:7.2f} s "
                  f"{out[f'{name}/{dtype}']['ops']:4d} ops {len(model) / 1e6:9.2f} MB", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--all", action="store_true", help="also build every recipe at its default size"
    )
    ap.add_argument("--out", type=Path, default=Path("bench_results/modelbuild.json"))
    args = ap.parse_args()

    result: dict = {
        "version": 1,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "load_avg_before": os.getloadavg(),
        "target_s": 2.0,
        "mobilenet_v2_224": {},
    }
    for dtype in ("float32", "int8"):
        fig = {"cold": cold(dtype), "warm": warm(dtype, args.repeat)}
        result["mobilenet_v2_224"][dtype] = fig
        w = fig["warm"]
        print(f"mobilenet_v2_like 224 {dtype:8s} cold {fig['cold']['first_build_s']:.2f} s "
              f"(+{fig['cold']['import_s']:.2f} s import)  warm min {w['min_s']:.2f} s "
              f"median {w['median_s']:.2f} s  {w['ops']} ops  {w['bytes'] / 1e6:.1f} MB")
    if args.all:
        print("default-size recipes:")
        result["recipes"] = all_recipes()
    result["load_avg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"load average {result['load_avg_before'][0]:.2f} -> "
        f"{result['load_avg_after'][0]:.2f}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
