"""`tilefleet infer --broker URL --deployment D --input X.npy -o Y.npy|DIR`."""

from __future__ import annotations

import argparse
import sys

from planner.commands._common import print_json
from planner.commands._fleet import add_broker, connect, load_npy, save_outputs
from planner.errors import FleetError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="run one input through a deployment")
    add_broker(p)
    p.add_argument("--deployment", "-d", required=True, help="deployment name")
    p.add_argument("--input", "-i", action="append", required=True, metavar="[NAME=]X.npy",
                   help="input array (repeat as NAME=FILE for several inputs)")
    p.add_argument("-o", "--output", required=True,
                   help="Y.npy, or a directory with one NAME.npy per output")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per attempt")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def _inputs(specs: list[str]) -> dict[str, object] | list[object]:
    named = [s.partition("=") for s in specs]
    if all(sep for _, sep, _ in named):
        return {n: load_npy(f) for n, _, f in named}
    if any(sep for _, sep, _ in named):
        raise FleetError("--input: give every input as NAME=FILE, or none")
    return [load_npy(s) for s in specs]


def run(args: argparse.Namespace) -> int:
    x = _inputs(args.input)
    with connect(args) as fleet:
        dep = fleet.deployment(args.deployment, timeout_s=args.timeout)
        inputs = dep.prepare(x)  # shape/dtype errors exit 2 before anything is sent
        outs = list(dep.record.results)
        if args.output.endswith(".npy") and len(outs) > 1:
            raise FleetError(f"-o {args.output}: the deployment has {len(outs)} outputs "
                             f"({', '.join(outs)}); give a directory")
        out = dep.infer(inputs)
    files = save_outputs(out, args.output)
    if args.json:
        print_json({"deployment": args.deployment, "outputs": {
            n: {"shape": list(a.shape), "dtype": a.dtype.name, "file": f}
            for (n, a), f in zip(out.items(), files, strict=True)}})
    else:
        for (n, a), f in zip(out.items(), files, strict=True):
            print(f"{n}: {a.dtype.name}{list(a.shape)} -> {f}", file=sys.stdout)
    return 0
