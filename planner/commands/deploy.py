"""`tilefleet deploy MODEL --broker URL --name D [--strategy S] [--json]`, or
`tilefleet deploy --plan PLAN --broker URL --name D [--model MODEL] [--json]`."""

from __future__ import annotations

import argparse
import time

from planner.commands._common import print_json, print_table
from planner.commands._fleet import add_broker, connect, fmt_s, plan_rows
from planner.planning.strategies import NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="plan (or read a plan), ship and start a model on the fleet")
    p.add_argument("model", nargs="?", help=".tflite file (with --plan: default the plan's model)")
    add_broker(p)
    p.add_argument("--name", required=True, help="deployment name")
    p.add_argument("--strategy", default="auto", metavar="S",
                   help="partition strategy (default auto): " + " ".join(NAMES))
    p.add_argument("--plan", help="deploy exactly this plan file (written by `tilefleet plan`)")
    p.add_argument("--model", dest="model_file", metavar="MODEL",
                   help="with --plan: the model file, instead of the path the plan names")
    p.add_argument("--profile", help="use this profile file instead of profiling the nodes")
    p.add_argument("--exclude", action="append", default=[], metavar="NODE")
    p.add_argument("--max-nodes", type=int)
    p.add_argument("--pin", action="append", default=[], metavar="OPS@NODE")
    p.add_argument("--objective", choices=["latency", "throughput"],
                   help="default: throughput for --strategy throughput, else latency")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for nodes")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`deploy --plan PLAN` ships that plan; `deploy MODEL` makes the plan `tilefleet plan`
    would write for the same options, then ships it the same way."""
    from planner.commands._planning import plan_model
    from planner.commands.plan import make_plan, strategy_fn
    from planner.errors import PlanError
    from planner.model.graph import load_model
    from planner.planning.plan import check_model, load_plan

    plan = None
    if args.plan:
        plan = load_plan(args.plan)
        graph = load_model(plan_model(plan, args.plan, args.model_file or args.model))
        check_model(plan, graph)  # one line when the model file is not the planned one
    elif args.model is None:
        raise PlanError("deploy needs a MODEL file or --plan PLAN")
    else:
        strategy_fn(args.strategy)  # a bad name fails before any profiling
        graph = load_model(args.model)
    t = time.perf_counter()
    with connect(args) as fleet:
        if plan is None:
            if args.profile:
                from planner.planning.profile import load_profile

                profile = load_profile(args.profile)
            else:
                profile = fleet.profile(graph, on_progress=args.on_progress)
            plan = make_plan(args, graph, profile, args.profile or "")
        dep = fleet.deploy(graph, plan=plan, name=args.name, on_progress=args.on_progress,
                           ready_timeout_s=args.timeout)
        rec = dep.record
        dep.close()
    secs = time.perf_counter() - t
    if args.json:
        doc = rec.to_json()
        print_json({"deployment": rec.name, "epoch": rec.epoch, "strategy": rec.strategy,
                    "objective": rec.objective, "nodes": list(rec.nodes),
                    "stages": doc["stages"], "plan": rec.plan, "predicted": rec.predicted,
                    "deploy_s": secs})
        return 0
    print(f"deployed {rec.name} (epoch {rec.epoch}, strategy {rec.strategy}) on "
          f"{len(rec.nodes)} node(s) in {secs:.1f} s")
    print_table(["stage", "ops", "node", "tile"], plan_rows(rec.to_json()))
    if rec.predicted:
        print(f"predicted latency {fmt_s(rec.predicted.get('latency_s'))}, throughput "
              f"{rec.predicted.get('throughput_fps', 0):.1f} fps")
    return 0
