"""`tilefleet inspect MODEL [--json]`: ops, costs and the tensors crossing every cut."""

from __future__ import annotations

import argparse

from planner.commands._common import human_bytes, print_json, print_table
from planner.model.graph import ModelGraph


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show a model's ops, costs and cut sizes")
    p.add_argument("model", help=".tflite file")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    graph = ModelGraph.load(args.model)
    doc = graph.describe()
    if args.json:
        print_json(doc)
        return 0
    m = doc["model"]
    print(f"model {m['file']}  sha256 {m['sha256'][:16]}  {len(graph.ops)} ops")
    for t in m["inputs"]:
        print(f"  input  {t['name']}  {t['shape']}  {t['dtype']}")
    for t in m["outputs"]:
        print(f"  output {t['name']}  {t['shape']}  {t['dtype']}")
    rows = []
    for op, cut in zip(doc["ops"], doc["cuts"], strict=False):
        out = op["outputs"][0] if op["outputs"] else {"shape": []}
        rows.append(
            [
                op["index"],
                op["type"],
                "x".join(map(str, out["shape"])),
                op["macs"],
                human_bytes(op["weight_bytes"]),
                human_bytes(cut["bytes"]),
                len(cut["tensors"]),
            ]
        )
    print_table(["op", "type", "output", "macs", "weights", "cut before", "tensors"], rows)
    total = sum(o["macs"] for o in doc["ops"])
    print(
        f"total {total / 1e6:.1f} M MACs, "
        f"{human_bytes(sum(o['weight_bytes'] for o in doc['ops']))} weights"
    )
    return 0
