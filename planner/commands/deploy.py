"""`tilefleet deploy MODEL --broker URL --name D [--strategy S | --plan PLAN] [--json]`."""

from __future__ import annotations

import argparse
import time

from planner.commands._common import print_json, print_table
from planner.commands._fleet import add_broker, connect, fmt_s, plan_rows
from planner.planning.strategies import NAMES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="profile, plan, ship and start a model on the fleet")
    p.add_argument("model", help=".tflite file")
    add_broker(p)
    p.add_argument("--name", required=True, help="deployment name")
    p.add_argument("--strategy", default="auto", metavar="S",
                   help="partition strategy (default auto): " + " ".join(NAMES))
    p.add_argument("--plan", help="deploy this plan file instead of planning")
    p.add_argument("--profile", help="use this profile file instead of profiling the nodes")
    p.add_argument("--exclude", action="append", default=[], metavar="NODE")
    p.add_argument("--max-nodes", type=int)
    p.add_argument("--pin", action="append", default=[], metavar="OPS@NODE")
    p.add_argument("--objective", choices=["latency", "throughput"], default="latency")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for nodes")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from planner.model.graph import load_model
    from planner.planning.constraints import Constraints, parse_pin
    from planner.planning.layout import from_plan

    graph = load_model(args.model)
    constraints = Constraints(pins=tuple(parse_pin(p) for p in args.pin),
                              exclude=tuple(args.exclude), max_nodes=args.max_nodes,
                              objective=args.objective)
    t = time.perf_counter()
    with connect(args) as fleet:
        kw: dict = {"name": args.name, "on_progress": args.on_progress, "ready_timeout_s": args.timeout}
        if args.plan:
            from planner.planning.plan import check_plan, load_plan

            plan = load_plan(args.plan)
            check_plan(plan, graph, [n.name for n in fleet.nodes()])
            dep = fleet.deploy(graph, layout=from_plan(plan), strategy=plan.strategy, **kw)
        else:
            profile = None
            if args.profile:
                from planner.planning.profile import load_profile

                profile = load_profile(args.profile)
            dep = fleet.deploy(graph, strategy=args.strategy, constraints=constraints,
                               profile=profile, **kw)
        rec = dep.record
        dep.close()
    secs = time.perf_counter() - t
    if args.json:
        print_json({"deployment": rec.name, "epoch": rec.epoch, "strategy": rec.strategy,
                    "nodes": list(rec.nodes), "stages": rec.stages, "layout": rec.layout,
                    "predicted": rec.predicted, "deploy_s": secs})
        return 0
    print(f"deployed {rec.name} (epoch {rec.epoch}, strategy {rec.strategy}) on "
          f"{len(rec.nodes)} node(s) in {secs:.1f} s")
    print_table(["stage", "ops", "node", "tile"], plan_rows(rec.to_json()))
    if rec.predicted:
        print(f"predicted latency {fmt_s(rec.predicted.get('latency_s'))}, throughput "
              f"{rec.predicted.get('throughput_fps', 0):.1f} fps")
    return 0
