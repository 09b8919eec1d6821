"""`tilefleet monitor --broker URL`: a live rich table of nodes, stages and deployments.

On a terminal the tables redraw in place (rich Live) every `--interval` seconds; on
anything else (a pipe, a file) each refresh prints the tables once, without colours.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from planner.commands._common import human_bytes
from planner.commands._fleet import add_broker, connect, fmt_s

PLAIN_WIDTH = 160  # off a terminal rich would wrap at 80 columns; a log line may be long


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="watch nodes, stages and metrics (Ctrl-C to stop)")
    add_broker(p)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, default=0, help="stop after N refreshes (0: never)")
    p.set_defaults(func=run)


def _table(title: str, headers: list[str], rows: list[list[object]], numeric: set[int]) -> Table:
    t = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for i, h in enumerate(headers):
        t.add_column(h, justify="right" if i in numeric else "left", no_wrap=True)
    for r in rows:
        t.add_row(*(str(c) for c in r))
    return t


def render(control: Any, header: str) -> Group:
    """One snapshot: nodes, then every stage the nodes report, then deployments."""
    online = control.online()
    nodes, stages = [], []
    for name in sorted(set(control.status) | set(control.metrics)):
        st = control.status.get(name, {}).get("state", "?")
        mt = control.metrics.get(name)
        res = online.get(name, {})
        nodes.append([name, st, res.get("board", ""), human_bytes(mt.rss_bytes if mt else 0),
                      f"{res.get('load', 0):.2f}", mt.frames_in if mt else 0,
                      human_bytes(mt.bytes_out if mt else 0),
                      sum(mt.errors.values()) if mt else 0])
        if st != "online" or mt is None:
            continue
        for key, s in sorted(mt.stages.items()):
            stages.append([key, name, s.frames, fmt_s(s.run_p50_s), fmt_s(s.turnaround_p50_s),
                           s.queue, s.errors])
    deployments = [f"deployment {name}: epoch {rec.get('epoch')}, strategy "
                   f"{rec.get('strategy')}, {len(rec.get('stages', {}))} stage(s) on "
                   f"{len(rec.get('nodes', {}))} node(s)"
                   for name, rec in sorted(control.records.items())]
    return Group(
        Text(header, style="bold"),
        _table("nodes", ["node", "status", "board", "rss", "load", "frames in", "sent",
                         "errors"], nodes, {3, 4, 5, 6, 7}),
        Text(""),
        _table("stages", ["deployment/epoch/stage", "node", "frames", "run p50", "turnaround",
                          "queue", "errors"], stages, {2, 3, 4, 5, 6}),
        Text(""),
        *(Text(line) for line in deployments))


def run(args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    console = Console(file=sys.stdout, **({} if tty else {"width": PLAIN_WIDTH}))
    with connect(args) as fleet:
        c = fleet.control
        deadline = time.monotonic() + 2.5  # metrics are not retained: wait for a round
        while set(c.online()) - set(c.metrics) and time.monotonic() < deadline:
            time.sleep(0.05)

        def snapshot() -> Group:
            return render(c, f"tilefleet monitor  {args.broker}  fleet {args.fleet}  "
                             f"{time.strftime('%H:%M:%S')}")

        try:
            if tty:
                with Live(snapshot(), console=console, auto_refresh=False) as live:
                    n = 1
                    while not args.count or n < args.count:
                        time.sleep(args.interval)
                        live.update(snapshot(), refresh=True)
                        n += 1
                return 0
            n = 0
            while True:
                console.print(snapshot())
                sys.stdout.flush()
                n += 1
                if args.count and n >= args.count:
                    return 0
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
