"""`tilefleet nodes --broker URL [--json]`: the online nodes and what they offer."""

from __future__ import annotations

import argparse

from planner.commands._common import human_bytes, print_json, print_table
from planner.commands._fleet import add_broker, connect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nodes", help="list the online nodes of a fleet")
    add_broker(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as fleet:
        nodes = fleet.nodes()
    if args.json:
        print_json({"nodes": [{"name": n.name, **{k: v for k, v in n.resources.items()
                                                  if k not in ("type", "v", "node")}}
                              for n in nodes]})
        return 0
    print_table(["node", "board", "runtime", "cores", "threads", "budget", "GFLOP/s", "load",
                 "data endpoint"],
                [[n.name, n.board, f"{n.runtime} {n.runtime_version}", n.cores, n.threads,
                  human_bytes(n.memory_budget_bytes), f"{n.speed_gflops:.1f}",
                  f"{n.resources.get('load', 0):.2f}", n.data_endpoint] for n in nodes])
    print(f"{len(nodes)} node(s) online")
    return 0
