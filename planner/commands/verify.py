"""`tilefleet verify DIR [--model M] [--threads N] [--no-xnnpack] [--seed S] [--json]`.

Exit codes: 0 when every model output of the chain is bit-identical to the whole
model's; 1 when any differs (a wrong slice is a tilefleet bug, not bad input; the
report is still printed); 2 for bad input (missing/damaged manifest, part or model).
"""

from __future__ import annotations

import argparse
import sys

from node.runtime import RuntimeSettings
from planner.commands._common import print_json, print_table
from planner.model.verify import verify_slice


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="run a slice's parts and compare with the whole model")
    p.add_argument("dir", help="directory written by `tilefleet slice`")
    p.add_argument("--model", help="whole model file (default: the one manifest.json names)")
    p.add_argument("--threads", type=_positive, default=1, help="interpreter threads (both sides)")
    p.add_argument("--no-xnnpack", action="store_true", help="builtin kernels only (both sides)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = RuntimeSettings(threads=args.threads, xnnpack=not args.no_xnnpack)
    report = verify_slice(args.dir, args.model, settings, args.seed)
    if args.json:
        print_json(report.to_json())
    else:
        print(
            f"{report.parts} parts, {report.tiles} tiles vs {report.model_file} ({report.runtime})"
        )
        print_table(["output", "shape", "dtype", "max abs diff", "identical"],
                    [[o.name, "x".join(map(str, o.shape)), o.dtype, f"{o.max_abs_diff:g}",
                      "yes" if o.identical else "NO"] for o in report.outputs])
    if not report.identical:
        print(f"tilefleet: verify: the parts differ from the whole model "
              f"(max abs diff {report.max_abs_diff:g})", file=sys.stderr)
        return 1
    return 0
