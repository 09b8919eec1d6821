"""`tilefleet simulate PLAN [--profile FILE] [--model MODEL] [--frames N] [--json]`."""

from __future__ import annotations

import argparse

from planner.commands._common import human_bytes, print_json, print_table
from planner.commands._planning import load_context
from planner.errors import PlanError
from planner.planning.simulate import simulate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="predict latency, throughput, bytes and memory of a plan")
    p.add_argument("plan", help="plan JSON")
    p.add_argument("--profile", help="profile JSON (default: the one the plan was made with)")
    p.add_argument("--model", help=".tflite file (default: the one the plan names)")
    p.add_argument(
        "--frames", type=int, default=32, help="frames in the pipelined run (default 32)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise PlanError(f"--frames must be >= 1, got {args.frames}")
    plan, cm = load_context(args.plan, args.model, args.profile)
    doc = simulate(plan, cm, args.frames)
    if args.json:
        print_json(doc)
        return 0
    print(
        f"latency {doc['latency_s'] * 1e3:.3f} ms  throughput {doc['throughput_fps']:.2f} fps "
        f"(bound {doc['throughput_bound_fps']:.2f})  "
        f"network {human_bytes(doc['bytes_per_frame'])}/frame  "
        f"bottleneck {doc['bottleneck']}"
    )
    print_table(
        ["device", "busy ms/frame", "memory", "budget"],
        [
            [
                d,
                f"{r['busy_s'] * 1e3:.3f}",
                human_bytes(r["memory_bytes"]),
                human_bytes(r["memory_budget_bytes"]),
            ]
            for d, r in doc["devices"].items()
        ],
    )
    if doc["links"]:
        print_table(
            ["link", "bytes/frame", "busy ms/frame"],
            [
                [f"{r['from']} -> {r['to']}", r["bytes"], f"{r['busy_s'] * 1e3:.3f}"]
                for r in doc["links"]
            ],
        )
    return 0
