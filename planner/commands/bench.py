"""`tilefleet bench --broker URL --deployment D --frames N [--check-against MODEL] [--json]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.commands._common import print_json, print_table
from planner.commands._fleet import add_broker, connect, fmt_s
from planner.errors import FleetError
from planner.fleet.bench import run_bench


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="stream frames through a deployment and measure it")
    add_broker(p)
    p.add_argument("--deployment", "-d", required=True, help="deployment name")
    p.add_argument("--frames", type=int, default=100, help="frames to send")
    p.add_argument("--window", type=int, default=8, help="frames in flight")
    p.add_argument("--check-against", metavar="MODEL",
                   help="compare every result with a local run of this .tflite")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.window < 1:
        raise FleetError("--frames and --window must be >= 1")
    ref = None
    if args.check_against:
        try:
            ref = Path(args.check_against).read_bytes()
        except OSError as exc:
            raise FleetError(f"{args.check_against}: cannot read model ({exc.strerror})") from None
    with connect(args) as fleet:
        dep = fleet.deployment(args.deployment, timeout_s=args.timeout)
        if ref is not None:
            from planner.model.graph import ModelGraph

            sha = ModelGraph(ref, args.check_against).sha256
            if sha != dep.record.model["sha256"]:
                raise FleetError(f"{args.check_against} (sha256 {sha[:12]}) is not the model "
                                 f"of deployment {args.deployment!r} "
                                 f"({dep.record.model['sha256'][:12]})")
        doc = run_bench(dep, args.frames, args.window, ref)
    if args.json:
        print_json(doc)
    else:
        print_table(["frames", "delivered", "errors", "mismatches", "p50", "p95", "fps"],
                    [[doc["frames"], doc["delivered"], doc["errors"],
                      "-" if doc["mismatches"] is None else doc["mismatches"],
                      fmt_s(doc["latency_p50_s"]), fmt_s(doc["latency_p95_s"]),
                      f"{doc['throughput_fps']:.1f}"]])
        if doc.get("first_error"):
            print(f"first error: {doc['first_error']}")
    return 1 if doc["errors"] or doc["mismatches"] else 0
