"""`tilefleet plan MODEL --profile FILE --strategy S -o PLAN`: partition a model over a fleet."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from planner.commands._common import human_bytes, print_json, print_table
from planner.errors import PlanError
from planner.model.graph import ModelGraph
from planner.planning.constraints import Constraints, default_objective, parse_pin
from planner.planning.plan import Plan, save_plan
from planner.planning.profile import load_profile
from planner.planning.strategies import NAMES, STRATEGIES, describe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="partition a model over the devices of a profile")
    p.add_argument("model", help=".tflite file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--profile", help="profile JSON (see PROFILE_AND_PLAN.md)")
    src.add_argument("--broker", help="MQTT broker URL: profile the online nodes")
    p.add_argument("--strategy", required=True, metavar="S", help=describe())
    p.add_argument("-o", "--output", required=True, help="plan file to write")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    p.add_argument("--source", help="node where input frames originate")
    p.add_argument("--sink", help="node where results go")
    p.add_argument("--pin", action="append", default=[], metavar="OPS@NODE", help="e.g. 0:5@camera")
    p.add_argument("--exclude", action="append", default=[], metavar="NODE")
    p.add_argument("--max-nodes", type=int)
    p.add_argument("--objective", choices=["latency", "throughput"])
    p.add_argument("--no-memory-check", action="store_true", help="ignore memory budgets")
    p.add_argument(
        "--partial-from", metavar="OLD_PLAN", help="re-plan moving only nearby boundaries"
    )
    p.add_argument("--fleet", default="default", help="fleet name (with --broker)")
    p.add_argument(
        "--save-profile", metavar="FILE", help="with --broker: also write the measured profile"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    strategy_fn(args.strategy)  # a bad name fails before any profiling
    graph = ModelGraph.load(args.model)
    profile = _profile_from_broker(args, graph) if args.broker else load_profile(args.profile)
    plan = make_plan(args, graph, profile, args.save_profile or args.profile or "")
    save_plan(plan, args.output)
    if args.json:
        print_json(plan.to_json())
        return 0
    print_summary(plan)
    print(f"wrote {args.output}")
    return 0


def strategy_fn(name: str):
    """The planning function of strategy `name`; PlanError (one line) when unknown."""
    if name not in STRATEGIES:
        raise PlanError(f"--strategy {name!r}: choose one of {', '.join(NAMES)}")
    return STRATEGIES[name]


def make_plan(args: argparse.Namespace, graph: ModelGraph, profile, profile_file: str) -> Plan:
    """The plan `tilefleet plan` writes (and `deploy MODEL` deploys) for these options.

    It names the model by absolute path and sha256 and embeds `profile`; `profile_file`
    is where that profile is also saved ("" when it only lives in the plan). Options a
    command does not have (deploy has no --partial-from) count as not given.
    """
    fn = strategy_fn(args.strategy)
    objective = args.objective or default_objective(args.strategy)
    opt = vars(args)
    constraints = Constraints(source=opt.get("source"), sink=opt.get("sink"),
                              pins=tuple(parse_pin(x) for x in args.pin),
                              exclude=tuple(args.exclude), max_nodes=args.max_nodes,
                              memory=not opt.get("no_memory_check"), objective=objective)
    # D3 partial adjustment of a running plan (planner/planning/partial.py)
    if opt.get("partial_from"):
        from planner.planning.partial import replan
        from planner.planning.plan import load_plan

        plan = replan(graph, load_plan(args.partial_from), profile, constraints, fn)
        print(
            f"replan: {plan.notes['replan']['mode']} ({plan.notes['replan']['reason']})",
            file=sys.stderr,
        )
    else:
        plan = fn(graph, profile, constraints)
    model_file = graph.source if graph.source.startswith("<") else str(Path(graph.source).resolve())
    return replace(plan, model_file=model_file, profile_file=str(profile_file))


def _profile_from_broker(args: argparse.Namespace, graph: ModelGraph):
    """Profile the online nodes of a live fleet (cached per board, runtime and model)."""
    from planner.fleet import Fleet
    from planner.planning.profile import save_profile

    with Fleet.connect(args.broker, fleet=args.fleet) as fleet:
        if not fleet.nodes():
            raise PlanError(f"no online nodes in fleet {args.fleet!r} at {args.broker}")
        profile = fleet.profile(graph, on_progress=args.on_progress)
    if args.save_profile:
        save_profile(profile, args.save_profile)
    return profile


def print_summary(plan) -> None:
    """Stages table and predicted figures."""
    pr = plan.predicted
    rows = []
    for s in plan.stages:
        where = (
            s.device
            if s.device
            else f"tiles {len(s.tiles.rows) - 1}x{len(s.tiles.cols) - 1}: "
            + ",".join(s.tiles.devices)
        )
        rows.append([s.id, f"[{s.ops[0]}, {s.ops[1]})", where])
    print(
        f"strategy {plan.strategy}  objective {plan.objective}  {plan.source} -> ... -> {plan.sink}"
    )
    print_table(["stage", "ops", "device"], rows)
    if pr:
        print(
            f"predicted latency {pr['latency_s'] * 1e3:.2f} ms  "
            f"throughput {pr['throughput_fps']:.2f} fps  "
            f"network {human_bytes(pr['bytes_per_frame'])}/frame  bottleneck {pr.get('bottleneck')}"
        )
