"""`tilefleet` command line: parse, set up logging, dispatch to one module per command.

Exit codes (INTERFACES.md): 0 success, 2 bad input or usage with one line on stderr,
1 internal error. Each command lives in `planner/commands/<name>.py` and provides
`register(subparsers)` (which sets `func` on its parser) — no logic here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from node.errors import NodeError
from planner.errors import TilefleetError

# Command modules under planner/commands, in the order `tilefleet --help` lists them.
COMMANDS = ["inspect", "slice", "verify", "plan", "simulate", "explain", "nodes", "monitor", "deploy", "undeploy", "infer", "bench", "demo", "watch", "testbed"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for any bad input
        self.exit(2, f"tilefleet: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available command registered."""
    parser = _Parser(prog="tilefleet", description="Run one DNN across a fleet of small boards.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"planner.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"planner.commands.{name}":
                continue  # command not built yet in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tilefleet` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        rc = args.func(args)
    except (TilefleetError, NodeError) as exc:
        print(f"tilefleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tilefleet: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
