"""The zero-setup demo: boards, broker and agents, plan, deploy, run, check, compare.

By default the boards are emulated (planner/testbed: three Raspberry Pi 4 class boards,
each an agent in its own network namespace held to the board's speed by a CPU quota, or
padded to it without root), because several full-speed agents sharing this machine's
cores can show no gain; `boards="native"` starts plain local agents instead.

Measured figures: latency is the median of unpipelined frames (one in flight);
throughput is frames delivered per second of a stream with `window` frames in flight.
The baseline is the same model deployed whole on the fastest single board of the set
(the `latency` plan limited to one node), measured the same way, so "speed-up over one
board" compares like with like (same hops to the client).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import FleetError
from planner.fleet import Fleet
from planner.fleet.bench import latency, run_bench
from planner.fleet.progress import OnProgress, note
from planner.local.localfleet import LocalFleet
from planner.model.graph import ModelGraph
from planner.planning.constraints import Constraints
from planner.planning.strategies import STRATEGIES

log = logging.getLogger(__name__)
DEFAULT_INPUT_SIZE = 128  # px: MobileNetV2-like runs in a few ms per frame on one core
WARMUP_FRAMES = 20  # unchecked frames through each deployment before it is measured


@dataclass(frozen=True)
class DemoOptions:
    nodes: int = 3
    model: str = "mobilenet_v2"
    strategy: str = "auto"
    frames: int = 100
    broker: str | None = None
    dtype: str = "float32"
    input_size: int = DEFAULT_INPUT_SIZE
    window: int = 8
    latency_frames: int = 20
    single: bool = True  # also measure the whole model on the fastest single board
    boards: str = "rpi4:3"  # KIND:COUNT[,...] emulated boards, or "native" (`nodes` agents)
    # A stream of camera frames is what a fleet of boards serves: the default plan is the
    # best for throughput; "latency" plans for one frame at a time.
    objective: str = "throughput"


@dataclass(frozen=True)
class DemoFleet:
    """Where the demo runs: the broker, its agents' names, how the boards are emulated."""

    broker_url: str
    names: list[str]
    workdir: Path
    emulation: str  # cgroup | padded | none
    boards: list[dict[str, Any]]
    notes: list[str]


@contextmanager
def demo_fleet(opts: DemoOptions) -> Iterator[DemoFleet]:
    """Emulated boards (a testbed of its own), or plain local agents for "native"."""
    if opts.boards == "native" or opts.broker:
        with LocalFleet(opts.nodes, opts.broker) as local:
            yield DemoFleet(local.broker_url, local.names, local.workdir, "none",
                            [{"name": n, "board": local.board} for n in local.names], [])
        return
    from planner.testbed import Testbed, make_spec

    spec = make_spec(opts.boards, name=f"demo{os.getpid()}")
    with Testbed(spec) as tb:
        yield DemoFleet(tb.broker_url, [n.name for n in tb.nodes], tb.workdir, tb.emulation,
                        [{"name": n.name, "board": n.board, "emulation": n.emulation,
                          "cpus": n.cpus, "threads": n.threads} for n in tb.nodes],
                        list(tb.notes))


def build_model(name: str, dtype: str, input_size: int) -> tuple[bytes, str]:
    """A recipe name (planner.modelbuild.recipes.RECIPES) or a .tflite path -> bytes."""
    from planner.modelbuild.recipes import RECIPES

    if name in RECIPES:
        return RECIPES[name](input_size=input_size, dtype=dtype, seed=0), \
            f"{name}_like {input_size}px {dtype}"
    p = Path(name)
    if not p.exists():
        raise FleetError(f"--model {name!r}: neither a recipe ({', '.join(RECIPES)}) nor a file")
    try:
        return p.read_bytes(), str(p)
    except OSError as exc:
        raise FleetError(f"--model {name}: cannot read ({exc.strerror})") from None


def measure(dep: Any, opts: DemoOptions, reference: bytes | None) -> dict[str, Any]:
    """Latency (unpipelined) and a checked, pipelined stream of opts.frames frames.

    A short unchecked warm-up comes first: the first frames through a fresh deployment pay
    for connections, allocator growth and cold caches, which would make the plan look
    slower than the baseline measured after it on an already warm machine.
    """
    run_bench(dep, min(opts.frames, WARMUP_FRAMES), opts.window)
    lat = latency(dep, min(opts.latency_frames, max(opts.frames, 1)))
    stream = run_bench(dep, opts.frames, opts.window, reference)
    return {"latency_s": lat["latency_s"], "latency_p95_s": lat["latency_p95_s"],
            "throughput_fps": stream["throughput_fps"], "stream": stream}


def run_demo(opts: DemoOptions, on_progress: OnProgress | None = None) -> dict[str, Any]:
    """Run the whole demo and return its report (the `demo --json` document).

    Each phase is a note of stage "demo" to `on_progress`; profiling and uploads report
    their own stages.
    """

    def say(message: str) -> None:
        note(on_progress, "demo", message)

    if opts.nodes < 1 or opts.frames < 1:
        raise FleetError("--nodes and --frames must be >= 1")
    data, label = build_model(opts.model, opts.dtype, opts.input_size)
    graph = ModelGraph(data, label)
    say(f"model {label}: {len(graph.ops)} ops, {sum(o.macs for o in graph.ops) / 1e6:.0f} M MACs")
    with demo_fleet(opts) as local:
        say(f"broker {local.broker_url}, {len(local.names)} agent(s), emulation "
            f"{local.emulation}")
        with Fleet.connect(local.broker_url) as fleet:
            nodes = [n for n in fleet.wait_for_nodes(len(local.names), 60)
                     if n.name in local.names]
            say(f"{len(nodes)} agent(s) online; profiling and planning ({opts.strategy})")
            profile = fleet.profile(graph, [n.name for n in nodes], on_progress=on_progress,
                                    cache_dir=local.workdir / "profiles")
            t = time.perf_counter()
            dep = fleet.deploy(graph, name="demo", strategy=opts.strategy, profile=profile,
                               constraints=Constraints(objective=opts.objective),
                               on_progress=on_progress)
            deploy_s = time.perf_counter() - t
            rec = dep.record
            say(f"deployed epoch {rec.epoch}: {len(rec.stages)} stage(s) on "
                f"{len(rec.nodes)} node(s) in {deploy_s:.1f} s; running {opts.frames} frames")
            measured = measure(dep, opts, data)
            dep.undeploy()
            single, single_node = None, None
            if opts.single:
                # the fastest single board as the planner sees it: latency on one node
                alone = STRATEGIES["latency"](graph, profile, Constraints(max_nodes=1))
                single_node = alone.devices()[0]
                say(f"baseline: the whole model on the fastest single board ({single_node})")
                one = fleet.deploy(graph, name="demo-single", plan=alone)
                single = measure(one, opts, None)
                one.undeploy()
    stream = measured.pop("stream")
    report: dict[str, Any] = {
        "model": {"name": label, "sha256": graph.sha256, "ops": len(graph.ops),
                  "macs": sum(o.macs for o in graph.ops), "dtype": opts.dtype,
                  "input_size": opts.input_size},
        "strategy": opts.strategy, "objective": opts.objective, "nodes": len(local.names),
        "frames": opts.frames,
        "emulation": local.emulation, "boards": local.boards, "notes": local.notes,
        "identical": stream["errors"] == 0 and stream["mismatches"] == 0,
        "delivered": stream["delivered"], "errors": stream["errors"],
        "mismatches": stream["mismatches"], "plan": rec.plan,
        "stages": rec.to_json()["stages"], "deploy_s": deploy_s,
        "predicted": {k: (rec.predicted or {}).get(k) for k in ("latency_s", "throughput_fps")},
        "measured": {**measured, "latency_p50_stream_s": stream["latency_p50_s"]},
    }
    if stream.get("first_error"):
        report["first_error"] = stream["first_error"]
    if single is not None:
        single.pop("stream")
        report["single"] = {**single, "node": single_node}
        report["speedup_vs_single"] = {
            "latency": single["latency_s"] / measured["latency_s"],
            "throughput": measured["throughput_fps"] / max(single["throughput_fps"], 1e-9)}
    return report
