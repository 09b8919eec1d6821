"""`tilefleet testbed up|status|down|cleanup`: emulated boards on this machine.

    tilefleet testbed up --boards rpi3:4,edge_server:1@cloud [--topology star|tiers]
        [--link RATE[,DELAY]] [--lan RATE[,DELAY]] [--backbone RATE[,DELAY]]
        [--name NAME] [--emulation auto|cgroup|padded|none] [--json]
    tilefleet testbed status [--name NAME] [--json]
    tilefleet testbed down [--name NAME]
    tilefleet testbed cleanup [--all]

`up` stays in the foreground until Ctrl-C or SIGTERM and prints the broker URL and the
nodes when every agent is online (with --json: one line of JSON). The code is in
planner/testbed/.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from planner.commands._common import print_json, print_table
from planner.testbed import Testbed, cleanup, down, leftovers, make_spec, state


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("testbed", help="emulated boards: namespaces, shaped links, CPU quotas")
    tsub = p.add_subparsers(dest="testbed_command", metavar="ACTION", parser_class=type(p))
    tsub.required = True
    up = tsub.add_parser("up", help="start a testbed; runs until Ctrl-C or SIGTERM")
    up.add_argument("--boards", required=True, help="KIND:COUNT[@TIER],... e.g. rpi3:4,rpi4:2")
    up.add_argument("--topology", default="star", choices=["star", "tiers"])
    up.add_argument("--link", help="device boards' link: RATE[,DELAY] (Mbit/s, one-way ms)")
    up.add_argument("--lan", help="edge boards' link (tiers): RATE[,DELAY]")
    up.add_argument("--backbone", help="cloud boards' link (tiers): RATE[,DELAY]")
    up.add_argument("--name", default="default", help="testbed name (default 'default')")
    up.add_argument("--emulation", default="auto", choices=["auto", "cgroup", "padded", "none"],
                    help="CPU emulation (auto: cgroup quota as root, else padded runs)")
    up.add_argument("--fresh-calibration", action="store_true",
                    help="time the reference workload again instead of using the cached figure")
    up.add_argument("--json", action="store_true", help="print one line of JSON when ready")
    up.set_defaults(func=run_up)
    st = tsub.add_parser("status", help="the running testbeds")
    st.add_argument("--name", help="only this testbed")
    st.add_argument("--json", action="store_true", help="print one JSON document")
    st.set_defaults(func=run_status)
    dn = tsub.add_parser("down", help="stop a testbed and remove everything it made")
    dn.add_argument("--name", default="default")
    dn.set_defaults(func=run_down)
    cl = tsub.add_parser("cleanup", help="remove what killed testbeds left (as `mn -c`)")
    cl.add_argument("--all", action="store_true", help="also stop the running testbeds")
    cl.set_defaults(func=run_cleanup)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: `down` runs


def run_up(args: argparse.Namespace) -> int:
    spec = make_spec(args.boards, args.topology, args.link, args.lan, args.backbone,
                     args.name, args.emulation)
    old = signal.signal(signal.SIGTERM, _interrupt)
    tb = Testbed(spec, fresh_calibration=args.fresh_calibration)
    try:
        tb.up()
        doc = tb.describe()
        if args.json:
            print(json.dumps(doc), flush=True)
        else:
            _print(doc)
            print("running; Ctrl-C or `tilefleet testbed down"
                  f"{'' if spec.name == 'default' else ' --name ' + spec.name}` stops it",
                  flush=True)
        reported: set[str] = set()
        while True:
            time.sleep(0.5)
            for name in set(tb.dead()) - reported:
                reported.add(name)
                print(f"testbed: agent {name} exited (log: {tb.workdir / (name + '.log')})",
                      file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut teardown
        tb.down()
        signal.signal(signal.SIGTERM, old)


def _print(doc: dict[str, Any]) -> None:
    print(f"testbed {doc['name']}: broker {doc['broker']}, emulation {doc['emulation']}, "
          f"topology {doc['topology']}")
    if doc.get("calibration"):
        c = doc["calibration"]
        print(f"calibration: reference workload {c['reference']['recipe']} "
              f"{c['reference']['input_size']} px {c['reference']['dtype']} takes "
              f"{c['host_ms']:.2f} ms on one core here")
    rows = []
    for n in doc["nodes"]:
        link = n["link"]
        rows.append([n["name"], n["board"], n["tier"], n["address"], n["threads"] or "-",
                     "-" if n["cpus"] is None else f"{n['cpus']:.3f}",
                     f"{n['speed']:.3f}" + (" padded" if n["emulation"] == "padded" else ""),
                     f"{n['period_ms']:g} ms" if n["period_ms"] else "-",
                     (f"{link['rate_mbit']:g} Mbit/s" if link["rate_mbit"] else "-")
                     + (f", {link['delay_ms']:g} ms" if link["delay_ms"] else "")])
    print_table(["node", "board", "tier", "address", "threads", "cpus", "speed/core",
                 "period", "link"], rows)
    for note in doc.get("notes", []):
        print(f"note: {note}")


def run_status(args: argparse.Namespace) -> int:
    docs = [d for d in state.all_states() if args.name in (None, d.get("name"))]
    for d in docs:
        d["running"] = state.alive(int(d.get("pid", 0)))
    if args.json:
        print_json({"testbeds": docs})
        return 0
    if not docs:
        print("no testbed is up" + (f" named {args.name!r}" if args.name else ""))
        return 0 if args.name is None else 1
    for d in docs:
        if not d["running"]:
            print(f"testbed {d['name']}: its `up` (pid {d['pid']}) is gone; "
                  "`tilefleet testbed cleanup` removes what it left")
            continue
        _print(d)
    return 0


def run_down(args: argparse.Namespace) -> int:
    if not down(args.name):
        print(f"tilefleet: error: no testbed named {args.name!r} is up", file=sys.stderr)
        return 2
    print(f"testbed {args.name} is down")
    return 0


def run_cleanup(args: argparse.Namespace) -> int:
    removed = cleanup(args.all)
    print("removed: " + "; ".join(removed) if removed else "nothing to clean")
    running = [d["name"] for d in state.all_states() if state.alive(int(d.get("pid", 0)))]
    if running:
        print(f"still running (kept; --all stops them): {', '.join(running)}")
        return 0
    left = {k: v for k, v in leftovers().items() if v}
    if left:
        print(f"still present: {left}", file=sys.stderr)
        return 1
    return 0
