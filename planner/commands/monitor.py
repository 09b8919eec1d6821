"""`tilefleet monitor --broker URL`: a live plain-text table of nodes, stages and metrics."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from planner.commands._common import human_bytes, print_table
from planner.commands._fleet import add_broker, connect, fmt_s


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="watch nodes, stages and metrics (Ctrl-C to stop)")
    add_broker(p)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--count", type=int, default=0, help="stop after N refreshes (0: never)")
    p.set_defaults(func=run)


def render(control: Any) -> None:
    """Print one snapshot: nodes, then every stage the nodes report, then deployments."""
    online = control.online()
    nodes, stages = [], []
    for name in sorted(set(control.status) | set(control.metrics)):
        st = control.status.get(name, {}).get("state", "?")
        mt = control.metrics.get(name, {})
        res = online.get(name, {})
        nodes.append([name, st, res.get("board", ""), human_bytes(mt.get("rss_bytes", 0)),
                      f"{res.get('load', 0):.2f}", mt.get("frames_in", 0),
                      human_bytes(mt.get("bytes_out", 0)), sum(mt.get("errors", {}).values())])
        if st != "online":
            continue
        for key, s in sorted(mt.get("stages", {}).items()):
            stages.append([key, name, s.get("frames", 0), fmt_s(s.get("run_p50_s")),
                           fmt_s(s.get("turnaround_p50_s")), s.get("queue", 0),
                           s.get("errors", 0)])
    print_table(["node", "status", "board", "rss", "load", "frames in", "sent", "errors"], nodes)
    print()
    print_table(["deployment/epoch/stage", "node", "frames", "run p50", "turnaround", "queue",
                 "errors"], stages)
    print()
    for name, rec in sorted(control.records.items()):
        print(f"deployment {name}: epoch {rec.get('epoch')}, strategy {rec.get('strategy')}, "
              f"{len(rec.get('stages', {}))} stage(s) on {len(rec.get('nodes', {}))} node(s)")


def run(args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    n = 0
    with connect(args) as fleet:
        try:
            c = fleet.control
            deadline = time.monotonic() + 2.5  # metrics are not retained: wait for a round
            while set(c.online()) - set(c.metrics) and time.monotonic() < deadline:
                time.sleep(0.05)
            while True:
                if tty:
                    sys.stdout.write("\033[H\033[2J")  # clear the screen, plain text
                print(f"tilefleet monitor  {args.broker}  fleet {args.fleet}  "
                      f"{time.strftime('%H:%M:%S')}")
                render(fleet.control)
                sys.stdout.flush()
                n += 1
                if args.count and n >= args.count:
                    return 0
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
