"""End-to-end benchmark on local agents: predicted vs measured per strategy, client overhead.

    python tools/bench_e2e.py [--nodes 3] [--frames 200] [--input-size 128] [--dtype float32]
                              [--strategies latency,throughput,...] [--out bench_results/e2e.json]

For the demo model (MobileNetV2-like) it starts an embedded broker and N agents, profiles
them once, then for each strategy plans, deploys, measures unpipelined latency (median
of single frames) and pipelined throughput (window frames in flight), checks every
result against a local interpreter, and prints predicted vs measured. Then it compares
one frame through a one-stage deployment with calling the interpreter directly, and
splits the difference into client-side time (submit + result handling) and the rest
(the agent hop: sockets, queues, decode, encode).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from planner.fleet import Fleet
from planner.fleet.bench import latency, run_bench
from planner.fleet.reference import LocalModel, random_inputs
from planner.graph import ModelGraph
from planner.layout import StageLayout
from planner.localfleet import LocalFleet
from planner.modelbuild import recipes

STRATEGIES = ["latency", "throughput", "tiles", "hybrid", "auto", "neurosurgeon", "dads",
              "even", "ftp", "memory"]


def err(pred: float | None, meas: float) -> float | None:
    return None if not pred or not meas else (pred - meas) / meas


def overhead(fleet: Fleet, graph: ModelGraph, data: bytes, node: str, frames: int) -> dict:
    """Direct interpreter vs a one-stage deployment, per frame, with the client's share."""
    local = LocalModel(data)
    x = random_inputs([{"name": graph.tensors[i].name, "shape": graph.tensors[i].shape,
                        "dtype": graph.tensors[i].dtype} for i in graph.inputs], 0)
    local.run(x)
    direct = []
    for _ in range(frames):
        t = time.perf_counter()
        local.run(x)
        direct.append(time.perf_counter() - t)
    dep = fleet.deploy(graph, name="bench-overhead", progress=False,
                       layout=(StageLayout(0, len(graph.ops), (node,)),))
    dep.infer(x)
    submit, total = [], []
    for _ in range(frames):
        t = time.perf_counter()
        fut = dep.submit(x)
        submit.append(time.perf_counter() - t)
        fut.result()
        total.append(time.perf_counter() - t)
    time.sleep(1.2)  # one metrics round, for the stage's own run time
    stages = fleet.control.metrics.get(node, {}).get("stages", {})
    run = next((s["run_p50_s"] for k, s in stages.items() if k.startswith("bench-overhead/")),
               None)
    dep.undeploy()
    d, e2e = statistics.median(direct), statistics.median(total)
    return {"direct_s": d, "deployed_s": e2e, "overhead_s": e2e - d,
            "client_submit_s": statistics.median(submit), "node_run_s": run,
            "hop_and_client_s": e2e - run if run else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=["float32", "int8"])
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", default="bench_results/e2e.json")
    args = ap.parse_args(argv)
    data = recipes.mobilenet_v2_like(input_size=args.input_size, dtype=args.dtype, seed=0)
    graph = ModelGraph(data, f"mobilenet_v2_like_{args.input_size}_{args.dtype}")
    rows, report = [], {"model": graph.source, "ops": len(graph.ops), "nodes": args.nodes,
                        "frames": args.frames, "window": args.window, "strategies": {}}
    with LocalFleet(args.nodes) as local, Fleet.connect(local.broker_url) as fleet:
        names = [n.name for n in fleet.wait_for_nodes(args.nodes, 60)]
        profile = fleet.profile(graph, names, cache_dir=local.workdir / "profiles",
                                progress=False)
        for s in args.strategies.split(","):
            try:
                dep = fleet.deploy(graph, name=f"bench-{s}", strategy=s, profile=profile,
                                   progress=False)
            except Exception as exc:  # a strategy that cannot plan this case: report it
                report["strategies"][s] = {"error": str(exc)}
                print(f"{s:>12}: {exc}", file=sys.stderr)
                continue
            lat = latency(dep, 30)
            stream = run_bench(dep, args.frames, args.window, data)
            pred = dep.record.predicted or {}
            rec = {"stages": len(dep.record.stages), "nodes": len(dep.record.nodes),
                   "layout": dep.record.layout,
                   "predicted": {k: pred.get(k) for k in ("latency_s", "throughput_fps")},
                   "measured": {"latency_s": lat["latency_s"],
                                "throughput_fps": stream["throughput_fps"]},
                   "latency_error": err(pred.get("latency_s"), lat["latency_s"]),
                   "throughput_error": err(pred.get("throughput_fps"), stream["throughput_fps"]),
                   "identical": stream["errors"] == 0 and stream["mismatches"] == 0}
            report["strategies"][s] = rec
            rows.append((s, rec))
            dep.undeploy()
        report["overhead"] = overhead(fleet, graph, data, names[0], 100)
    print(f"{graph.source}: {len(graph.ops)} ops on {args.nodes} local agents, "
          f"{args.frames} frames, window {args.window}")
    print(f"{'strategy':>12} {'stages':>6} {'pred lat':>9} {'meas lat':>9} {'err':>6} "
          f"{'pred fps':>9} {'meas fps':>9} {'err':>6} identical")
    for s, r in rows:
        p, m = r["predicted"], r["measured"]
        print(f"{s:>12} {r['stages']:>6} {p['latency_s'] * 1e3:>7.2f}ms "
              f"{m['latency_s'] * 1e3:>7.2f}ms {r['latency_error'] or 0:>+6.0%} "
              f"{p['throughput_fps']:>9.0f} {m['throughput_fps']:>9.0f} "
              f"{r['throughput_error'] or 0:>+6.0%} {r['identical']}")
    o = report["overhead"]
    print(f"one frame: interpreter {o['direct_s'] * 1e3:.2f} ms, one-stage deployment "
          f"{o['deployed_s'] * 1e3:.2f} ms -> overhead {o['overhead_s'] * 1e3:.2f} ms/frame "
          f"(client submit {o['client_submit_s'] * 1e6:.0f} us)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
