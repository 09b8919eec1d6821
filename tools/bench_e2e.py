"""End-to-end benchmark on local agents: predicted vs measured per strategy, client overhead.

    python tools/bench_e2e.py [--nodes 3] [--frames 200] [--repeat 3] [--input-size 128]
                              [--dtype float32] [--strategies latency,throughput,...]
                              [--out bench_results/e2e.json]

For the demo model (MobileNetV2-like) it starts an embedded broker and N agents, profiles
them once (per-op times, links, stage/piece/copy overheads, the shared host), then for
each strategy plans, deploys, warms up, and `--repeat` times measures unpipelined
latency (median of 100 single frames) and pipelined throughput (window frames in flight),
checks every result against a local interpreter, and prints predicted vs the median of
the repetitions (with their spread, the 1-minute load average around them and `other`: the
cores' worth of CPU that processes outside this benchmark used meanwhile, since the agents
share this machine with whatever else runs on it and the model cannot see that), and the
CPU seconds per frame the plan books on the host against what the client and agents used
(`cpu/frame` predicted/measured). Then it compares one frame through a one-stage
deployment with calling the interpreter directly, and splits the difference into what
the deployment client adds (vs a bare pyzmq client sending the same request) and the
agent hop (sockets, queues, decode, encode), interleaved in rounds.
`--strategies ""` prints only that line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil
import zmq

from node.wire.frames import Header, decode, encode, meta_for
from planner.fleet import Fleet
from planner.fleet.bench import latency, run_bench
from planner.fleet.reference import LocalModel, random_inputs
from planner.local.localfleet import LocalFleet
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.constraints import Constraints
from planner.planning.costmodel import CostModel
from planner.planning.plan import Stage, plan_from_json
from planner.planning.planbuild import make_plan
from planner.planning.profile import profile_from_json
from planner.planning.strategies import NAMES as STRATEGIES


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def cpu_now() -> tuple[float, float, float]:
    """(wall, busy CPU seconds of the machine, CPU seconds of this process and its agents)."""
    t = psutil.cpu_times()
    me = psutil.Process()
    ours = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            c = p.cpu_times()
            ours += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            pass
    return (
        time.time(),
        t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0),
        ours,
    )


def foreign(before: tuple[float, float, float]) -> float:
    """Cores' worth of CPU that other processes used since `before` (noise the model cannot see)."""
    after = cpu_now()
    wall = max(after[0] - before[0], 1e-9)
    return max((after[1] - before[1]) - (after[2] - before[2]), 0.0) / wall


def measure(dep, frames: int, window: int, data: bytes, repeat: int) -> dict:
    """Median latency and throughput over `repeat` rounds after a warm-up, with their spread."""
    run_bench(dep, min(frames, 50), window)  # warm-up: connections, allocations, caches
    lats, fps, cpu, bad, before, cpu0 = [], [], [], 0, load(), cpu_now()
    for _ in range(repeat):
        lats.append(latency(dep, 100)["latency_s"])
        c0 = cpu_now()
        stream = run_bench(dep, frames, window, data)
        cpu.append((cpu_now()[2] - c0[2]) / frames)
        fps.append(stream["throughput_fps"])
        bad += stream["errors"] + stream["mismatches"]
    return {"latency_s": statistics.median(lats), "throughput_fps": statistics.median(fps),
            "latency_runs_s": lats, "throughput_runs_fps": fps, "identical": bad == 0,
            "cpu_per_frame_s": statistics.median(cpu),
            "load_before": before, "load_after": load(), "foreign_cpu_cores": foreign(cpu0)}


def predicted_cpu(pred: dict) -> float | None:
    """CPU seconds per frame the model books on the shared host's cores (None: no shared host)."""
    hosts = pred.get("hosts") or {}
    return sum(h["work_s"] for h in hosts.values()) if hosts else None


def cpu_pair(pred: dict, meas: dict) -> str:
    """'predicted/measured' CPU ms per frame on this host (measured: client and agents)."""
    p = pred.get("cpu_per_frame_s")
    return f"{p * 1e3 if p else 0:.2f}/{meas.get('cpu_per_frame_s', 0) * 1e3:.2f}ms"


def err(pred: float | None, meas: float) -> float | None:
    return None if not pred or not meas else (pred - meas) / meas


def overhead(fleet: Fleet, graph: ModelGraph, data: bytes, node: str, frames: int,
             rounds: int = 10) -> dict:
    """Direct interpreter vs a one-stage deployment, per frame, with the client's share.

    Three ways of running one frame, interleaved in `rounds` blocks so a drifting load hits
    all alike: the interpreter in this process (`direct`); the deployment's own client
    (`deployed`: Deployment.infer); and a bare pyzmq client sending the same request to the
    same stage (`raw`: one PUSH, one PULL, the frames encoded in the loop, no threads). So
    deployed - raw is what the deployment client adds, raw - direct the agent hop.
    """
    local = LocalModel(data)
    x = random_inputs([{"name": graph.tensors[i].name, "shape": graph.tensors[i].shape,
                        "dtype": graph.tensors[i].dtype} for i in graph.inputs], 0)
    dep = fleet.deploy(graph, name="bench-overhead",
                       stages=(Stage(0, (0, len(graph.ops)), node),))
    rec = dep.record
    ctx = zmq.Context.instance()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.linger = push.linger = 0
    reply = f"tcp://127.0.0.1:{pull.bind_to_random_port('tcp://127.0.0.1')}"
    route = rec.entry_routes()[0]
    push.connect(route.to)
    count = iter(range(1 << 62))

    def raw() -> None:
        arr = x[route.tensor]
        h = Header("data", rec.name, rec.epoch, f"raw-{next(count)}", route.stage, reply,
                   (meta_for(route.dest_name, arr),), src="client")
        push.send_multipart(encode(h, [arr]), copy=False)
        decode(pull.recv_multipart(copy=False))

    def submit() -> None:
        t = time.perf_counter()
        fut = dep.submit(x)
        times["submit"].append(time.perf_counter() - t)
        fut.result()

    ways = {"direct": lambda: local.run(x), "deployed": submit, "raw": raw}
    times: dict[str, list[float]] = {k: [] for k in [*ways, "submit"]}
    try:
        for f in ways.values():
            for _ in range(10):  # warm-up: connections, allocations
                f()
        times["submit"].clear()
        per = max(frames // rounds, 1)
        for _ in range(rounds):
            for name, f in ways.items():
                for _ in range(per):
                    t = time.perf_counter()
                    f()
                    times[name].append(time.perf_counter() - t)
        time.sleep(1.2)  # one metrics round, for the stage's own run time
        mt = fleet.control.metrics.get(node)
        run = next((s.run_p50_s for k, s in (mt.stages if mt else {}).items()
                    if k.startswith("bench-overhead/")), None)
    finally:
        pull.close()
        push.close()
        dep.undeploy()
    d, e2e, bare = (statistics.median(times[k]) for k in ("direct", "deployed", "raw"))
    return {"direct_s": d, "deployed_s": e2e, "raw_s": bare, "overhead_s": e2e - d,
            "client_s": e2e - bare, "hop_s": bare - d,
            "client_submit_s": statistics.median(times["submit"]), "node_run_s": run,
            "hop_and_client_s": e2e - run if run else None, "frames_each": per * rounds}


def replay(graph: ModelGraph, report: dict) -> int:
    """Predicted (now) vs measured (then) for every strategy of a saved report."""
    cm = CostModel(graph, profile_from_json(report["profile"]))
    print(f"{'strategy':>12} {'pred lat':>9} {'meas lat':>9} {'err':>6} {'pred fps':>9} "
          f"{'meas fps':>9} {'err':>6} {'cpu/frame':>13} bottleneck")
    for s, r in report["strategies"].items():
        if not r.get("plan"):
            continue
        stages = list(plan_from_json(r["plan"], f"report strategy {s}").stages)
        p = make_plan(cm, stages, s, Constraints()).predicted
        m = r["measured"]
        print(f"{s:>12} {p['latency_s'] * 1e3:>7.2f}ms {m['latency_s'] * 1e3:>7.2f}ms "
              f"{err(p['latency_s'], m['latency_s']):>+6.0%} {p['throughput_fps']:>9.0f} "
              f"{m['throughput_fps']:>9.0f} {err(p['throughput_fps'], m['throughput_fps']):>+6.0%} "
              f"{cpu_pair({'cpu_per_frame_s': predicted_cpu(p)}, m):>13} {p['bottleneck']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=["float32", "int8"])
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", default="bench_results/e2e.json")
    ap.add_argument("--overhead-frames", type=int, default=300,
                    help="frames per way for the one-frame overhead line")
    ap.add_argument("--replay", help="re-predict a saved report's plans from its profile with "
                                     "the current cost model (no agents), against its measurements")
    args = ap.parse_args(argv)
    data = recipes.mobilenet_v2_like(input_size=args.input_size, dtype=args.dtype, seed=0)
    graph = ModelGraph(data, f"mobilenet_v2_like_{args.input_size}_{args.dtype}")
    if args.replay:
        return replay(graph, json.loads(Path(args.replay).read_text()))
    rows, report = [], {"model": graph.source, "ops": len(graph.ops), "nodes": args.nodes,
                        "frames": args.frames, "window": args.window, "repeat": args.repeat,
                        "cpus": os.cpu_count(), "strategies": {}}
    with LocalFleet(args.nodes) as local, Fleet.connect(local.broker_url) as fleet:
        names = [n.name for n in fleet.wait_for_nodes(args.nodes, 60)]
        profile = fleet.profile(graph, names, cache_dir=local.workdir / "profiles")
        report["profile"] = profile.to_json()
        for s in [s for s in args.strategies.split(",") if s]:
            try:
                dep = fleet.deploy(graph, name=f"bench-{s}", strategy=s, profile=profile)
            except Exception as exc:  # a strategy that cannot plan this case: report it
                report["strategies"][s] = {"error": str(exc)}
                print(f"{s:>12}: {exc}", file=sys.stderr)
                continue
            got = measure(dep, args.frames, args.window, data, args.repeat)
            pred = dep.record.predicted or {}
            rec = {"stages": len(dep.record.stages), "nodes": len(dep.record.nodes),
                   "plan": dep.record.plan,
                   "predicted": {**{k: pred.get(k) for k in ("latency_s", "throughput_fps",
                                                             "throughput_bound_fps", "bottleneck")},
                                 "cpu_per_frame_s": predicted_cpu(pred)},
                   "measured": got,
                   "latency_error": err(pred.get("latency_s"), got["latency_s"]),
                   "throughput_error": err(pred.get("throughput_fps"), got["throughput_fps"]),
                   "identical": got["identical"]}
            report["strategies"][s] = rec
            rows.append((s, rec))
            dep.undeploy()
        report["overhead"] = overhead(fleet, graph, data, names[0], args.overhead_frames)
    print(f"{graph.source}: {len(graph.ops)} ops on {args.nodes} local agents, {os.cpu_count()} "
          f"CPUs, {args.frames} frames, window {args.window}, median of {args.repeat}")
    print(
        f"{'strategy':>12} {'stages':>6} {'pred lat':>9} {'meas lat':>9} {'err':>6} "
        f"{'pred fps':>9} {'meas fps':>9} {'err':>6} {'fps spread':>11} "
        f"{'cpu/frame':>13} {'load':>9} "
        f"{'other':>5} identical"
    )
    for s, r in rows:
        p, m = r["predicted"], r["measured"]
        spread = f"{min(m['throughput_runs_fps']):.0f}-{max(m['throughput_runs_fps']):.0f}"
        print(f"{s:>12} {r['stages']:>6} {p['latency_s'] * 1e3:>7.2f}ms "
              f"{m['latency_s'] * 1e3:>7.2f}ms {r['latency_error'] or 0:>+6.0%} "
              f"{p['throughput_fps']:>9.0f} {m['throughput_fps']:>9.0f} "
              f"{r['throughput_error'] or 0:>+6.0%} {spread:>11} {cpu_pair(p, m):>13} "
              f"{m['load_before']:>4.1f}/{m['load_after']:<4.1f} {m['foreign_cpu_cores']:>5.2f} "
              f"{r['identical']}")
    o = report["overhead"]
    print(f"one frame: interpreter {o['direct_s'] * 1e3:.2f} ms, one-stage deployment "
          f"{o['deployed_s'] * 1e3:.2f} ms -> overhead {o['overhead_s'] * 1e3:.2f} ms/frame: "
          f"client {o['client_s'] * 1e6:.0f} us (submit {o['client_submit_s'] * 1e6:.0f} us), "
          f"agent hop {o['hop_s'] * 1e6:.0f} us (bare pyzmq client: {o['raw_s'] * 1e3:.2f} ms)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
