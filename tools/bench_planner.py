"""Planning time of every registered strategy for a ~300-op model over 4, 16 and 64 devices.

Two fleets per size: "lan" (boards of four types on one switch: every link equal) and
"wan" (the same boards plus an edge server and a cloud VM behind slower links, so links
differ between device classes). Prints a table and writes bench_results/planner.json.

    python tools/bench_planner.py [--ops 300] [--sizes 4 16 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.config import config_dir  # noqa: E402
from planner.errors import TilefleetError  # noqa: E402
from planner.model.graph import ModelGraph  # noqa: E402
from planner.modelbuild import recipes  # noqa: E402
from planner.planning.constraints import Constraints  # noqa: E402
from planner.planning.profile import Link, from_board_files  # noqa: E402
from planner.planning.strategies import STRATEGIES  # noqa: E402

BOARDS = ["rpi3", "rpi4", "rpi5", "jetson_nano"]


def fleet(size: int, kind: str):
    """`size` computing devices (+ a non-computing client that sends frames and gets results)."""
    cfg = config_dir()
    boards = {}
    n_boards = size if kind == "lan" else size - 2
    for i in range(n_boards):
        b = BOARDS[i % len(BOARDS)]
        boards[f"{b}-{i // len(BOARDS)}"] = cfg / f"{b}.toml"
    links = {}
    if kind == "wan":
        boards["edge"] = cfg / "edge_server.toml"
        boards["cloud"] = cfg / "edge_server.toml"
    p = from_board_files(boards, default_link=Link(12.5e6, 1e-3), source="client", sink="client")
    if kind == "wan":
        for name in p.devices:
            if name != "cloud":
                links[(name, "cloud")] = Link(2.5e6, 0.02)  # 20 Mbit/s uplink, 20 ms
        for name in p.devices:
            if name not in ("edge", "cloud"):
                links[(name, "edge")] = Link(6.25e6, 0.002)
        from dataclasses import replace

        p = replace(p, links=links)
    return p


def _partial_row(graph, prof, kind: str, size: int, repeat: int) -> dict:
    """D3 partial re-plan of a throughput plan after its last stage's device vanished."""
    from dataclasses import replace

    from planner.planning.partial import replan

    c = Constraints(objective="throughput")
    old = STRATEGIES["throughput"](graph, prof, c)
    victim = old.stages[-1].device
    gone = replace(prof, devices={k: v for k, v in prof.devices.items() if k != victim})
    best, new = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        new = replan(graph, old, gone, c, STRATEGIES["throughput"])
        best = min(best, time.perf_counter() - t)
    mode = new.notes["replan"]["mode"]
    print(
        f"{'partial':13s} {kind:5s} {size:7d} {best:8.3f} {new.predicted['latency_s'] * 1e3:11.2f} "
        f"{new.predicted['throughput_fps']:8.2f} {len(new.stages):6d}  "
        f"{{'mode': {mode!r}, 'vanished': {victim!r}}}"
    )
    return {
        "strategy": "partial",
        "fleet": kind,
        "devices": size,
        "ops": len(graph.ops),
        "plan_s": best,
        "mode": mode,
        "vanished": victim,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    ap.add_argument("-o", "--output", default=str(ROOT / "bench_results" / "planner.json"))
    args = ap.parse_args(argv)
    graph = ModelGraph(recipes.random_dag(0, args.ops, input_size=32), f"random_dag(0, {args.ops})")
    rows = []
    print(f"model {graph.source}: {len(graph.ops)} ops; best of {args.repeat}")
    print(
        f"{'strategy':13s} {'fleet':5s} {'devices':>7s} {'plan s':>8s} "
        f"{'latency ms':>11s} {'fps':>8s} "
        f"{'stages':>6s}  notes"
    )
    for size in args.sizes:
        for kind in ("lan", "wan"):
            prof = fleet(size, kind)
            for name, fn in STRATEGIES.items():
                for objective in ["latency"] if name != "throughput" else ["throughput"]:
                    best, plan, err = float("inf"), None, None
                    for _ in range(args.repeat):
                        t = time.perf_counter()
                        try:
                            plan = fn(graph, prof, Constraints(objective=objective))
                        except TilefleetError as exc:
                            err = str(exc)
                            break
                        best = min(best, time.perf_counter() - t)
                    rec = {"strategy": name, "fleet": kind, "devices": size, "ops": len(graph.ops)}
                    if err:
                        rec["error"] = err
                        print(f"{name:13s} {kind:5s} {size:7d}  error: {err}")
                    else:
                        pr = plan.predicted
                        note = {
                            k: plan.notes[k]
                            for k in ("optimal", "method", "branches")
                            if k in plan.notes
                        }
                        rec.update(
                            plan_s=best,
                            latency_s=pr["latency_s"],
                            throughput_fps=pr["throughput_fps"],
                            stages=len(plan.stages),
                            notes=note,
                        )
                        print(
                            f"{name:13s} {kind:5s} {size:7d} {best:8.3f} "
                            f"{pr['latency_s'] * 1e3:11.2f} "
                            f"{pr['throughput_fps']:8.2f} {len(plan.stages):6d}  {note}"
                        )
                    rows.append(rec)
            rows.append(_partial_row(graph, prof, kind, size, args.repeat))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                               "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
