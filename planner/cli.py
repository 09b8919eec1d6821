"""`tilefleet` command line: parse, set up logging, dispatch to one module per command.

Exit codes (docs/cli.md): 0 success, 2 bad input or usage with one line on stderr,
1 internal error. Each command lives in `planner/commands/<name>.py` and provides
`register(subparsers)` (which sets `func` on its parser) — no logic here. Commands are
imported by name, so a module that fails to import fails every invocation loudly instead
of silently dropping its command. A reader that closes the pipe early (`| head`) ends
the command quietly with exit 0, as Unix tools do.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from types import ModuleType

from node.errors import NodeError
from planner.commands import (
    bench,
    demo,
    deploy,
    explain,
    infer,
    monitor,
    nodes,
    plan,
    simulate,
    testbed,
    undeploy,
    verify,
    watch,
)
from planner.commands import inspect as inspect_cmd
from planner.commands import slice as slice_cmd
from planner.commands._progress import rendered
from planner.errors import TilefleetError

# In the order `tilefleet --help` lists them.
COMMANDS: tuple[ModuleType, ...] = (inspect_cmd, slice_cmd, verify, plan, simulate, explain,
                                    nodes, monitor, deploy, undeploy, infer, bench, demo, watch,
                                    testbed)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for any bad input
        self.exit(2, f"tilefleet: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command registered."""
    parser = _Parser(prog="tilefleet", description="Run one DNN across a fleet of small boards.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress on stderr (default: only when stderr is a terminal)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (a broken pipe elsewhere is a bug)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def _discard_stdout() -> None:
    """Point stdout at devnull so the interpreter's exit flush stays quiet.

    The recipe of the Python docs (signal module, "Note on SIGPIPE").
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tilefleet` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        with rendered(args.progress) as on_progress:  # bars end before an error line
            args.on_progress = on_progress
            rc = args.func(args)
            sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        _discard_stdout()
        return 0
    except (TilefleetError, NodeError) as exc:
        print(f"tilefleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tilefleet: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
