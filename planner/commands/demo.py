"""`tilefleet demo [--boards KIND:COUNT,...|native] [--nodes N] [--model NAME|PATH]
[--strategy S] [--frames N] [--broker URL] [--dtype float32|int8] [--json]`: everything on
this machine (emulated boards by default), checked against a single interpreter."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from planner.commands._common import print_json, print_table
from planner.commands._fleet import fmt_s, plan_rows
from planner.local.demo import DEFAULT_INPUT_SIZE, DemoOptions, run_demo
from planner.planning.strategies import NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="zero-setup demo: emulated boards, deploy, check")
    p.add_argument("--boards", metavar="SPEC",
                   help="emulated boards KIND:COUNT[,KIND:COUNT...] (default rpi4:3; boards "
                   "from node/boards/), or 'native' for plain local agents at full speed")
    p.add_argument("--nodes", type=int, default=None,
                   help="how many boards (of the default rpi4) or native agents (default 3)")
    p.add_argument("--model", default="mobilenet_v2", help="recipe name or .tflite path")
    p.add_argument("--strategy", default="auto", metavar="S",
                   help="partition strategy (default auto): " + " ".join(NAMES))
    p.add_argument("--objective", choices=["throughput", "latency"], default=None,
                   help="what the plan optimises (default throughput, the strategy's own "
                   "for latency/throughput)")
    p.add_argument("--frames", type=int, default=100, help="frames to run (default 100)")
    p.add_argument("--broker", help="use this broker instead of starting an embedded one")
    p.add_argument("--dtype", choices=["float32", "int8"], default="float32")
    p.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE,
                   help=f"recipe input size in px (default {DEFAULT_INPUT_SIZE})")
    p.add_argument("--window", type=int, default=8, help="frames in flight (default 8)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the whole-model-on-one-node comparison")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C, so every child is stopped


def run(args: argparse.Namespace) -> int:
    nodes = 3 if args.nodes is None else args.nodes
    # --broker means "my fleet's broker": the demo's agents are then plain local processes
    boards = args.boards or ("native" if args.broker else f"rpi4:{nodes}")
    from planner.planning.constraints import default_objective

    objective = args.objective or (default_objective(args.strategy)
                                   if args.strategy in ("latency", "throughput") else "throughput")
    opts = DemoOptions(nodes=nodes, boards=boards, objective=objective, model=args.model,
                       strategy=args.strategy,
                       frames=args.frames, broker=args.broker, dtype=args.dtype,
                       input_size=args.input_size, window=args.window,
                       single=not args.no_baseline)
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run_demo(opts, args.on_progress)
    finally:
        signal.signal(signal.SIGTERM, old)
    if args.json:
        print_json(report)
    else:
        _print(report)
    return 0 if report["identical"] else 1


def _print(r: dict[str, Any]) -> None:
    m = r["model"]
    print(f"model {m['name']}: {m['ops']} ops, {m['macs'] / 1e6:.0f} M MACs; strategy "
          f"{r['strategy']} for {r['objective']}, {r['nodes']} node(s)")
    kinds: dict[str, int] = {}
    for b in r["boards"]:
        kinds[b["board"]] = kinds.get(b["board"], 0) + 1
    how = {"cgroup": "each board an agent in its own network namespace, its CPU held to the "
                     "board's calibrated speed by a cgroup quota",
           "padded": "agents padded to each board's speed (no root or cgroups here: an "
                     "approximation)",
           "none": "plain local agents at this machine's speed (no emulation)"}
    print(f"boards: {', '.join(f'{n} x {k}' for k, n in kinds.items())}; emulation "
          f"{r['emulation']}: {how.get(r['emulation'], r['emulation'])}")
    for note in r.get("notes", []):
        print(f"  note: {note}")
    print_table(["stage", "ops", "node", "tile"], plan_rows({"stages": r["stages"]}))
    p, ms = r["predicted"], r["measured"]
    rows = [["latency", fmt_s(p.get("latency_s")), fmt_s(ms["latency_s"])],
            ["throughput", f"{p['throughput_fps']:.1f} fps" if p.get("throughput_fps") else "-",
             f"{ms['throughput_fps']:.1f} fps"]]
    if "single" in r:
        s = r["single"]
        rows[0].append(fmt_s(s["latency_s"]))
        rows[1].append(f"{s['throughput_fps']:.1f} fps")
    print()
    one = "one board" if r["emulation"] != "none" else "one node"
    print_table(["", "predicted", "measured", *([one] if "single" in r else [])], rows)
    if "speedup_vs_single" in r:
        sp = r["speedup_vs_single"]
        print(f"speed-up over the fastest single {one[4:]} ({r['single']['node']}): latency "
              f"x{sp['latency']:.2f}, throughput x{sp['throughput']:.2f}"
              f"{' (padded boards: approximate)' if r['emulation'] == 'padded' else ''}")
    verdict = "identical" if r["identical"] else "NOT identical"
    print(f"{r['delivered']}/{r['frames']} results delivered, {verdict} to a local "
          f"single-interpreter run ({r['mismatches']} mismatches, {r['errors']} errors)")
    if r.get("first_error"):
        print(f"first error: {r['first_error']}")
