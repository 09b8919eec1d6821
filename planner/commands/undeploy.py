"""`tilefleet undeploy D --broker URL [--json]`: free a deployment on every node."""

from __future__ import annotations

import argparse

from planner.commands._common import print_json
from planner.commands._fleet import add_broker, connect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("undeploy", help="stop a deployment and free its stages")
    p.add_argument("name", help="deployment name")
    add_broker(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with connect(args) as fleet:
        doc = fleet.undeploy(args.name)
    if args.json:
        print_json(doc)
    else:
        note = f" ({len(doc['offline'])} offline node(s) skipped)" if doc["offline"] else ""
        gone = doc.get("unconfirmed") or []
        if gone:  # killed without a Last Will yet: their stages die with them or on restart
            note += f"; {len(gone)} node(s) did not confirm: {', '.join(gone)}"
        print(f"undeployed {args.name} from {len(doc['nodes'])} node(s){note}")
    return 1 if doc["errors"] else 0
