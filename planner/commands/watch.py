"""`tilefleet watch D --broker URL --model MODEL`: re-plan deployment D live until Ctrl-C.

Triggers: a node of D goes offline (its Last Will), or a stage's measured time (from the
agents' metrics) or a probed link's bandwidth stays beyond the threshold for
`--intervals` metric rounds (a link only when that moves the plan's predicted figure by
more than `--margin`), or a node comes online (new, or back after its Last Will) and a
plan that uses it beats the running one by `--margin` (judged once per node per
`--join-cooldown`). Each re-plan is printed, logged, and published on
`tilefleet/<fleet>/deployments/D/replans`. `--json` prints one document at the end.
Re-plans use the deployment's strategy and objective (from its record); `--strategy` and
`--objective` override them.
"""

from __future__ import annotations

import argparse
import time

from planner.commands._common import print_json
from planner.commands._fleet import add_broker, connect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help="re-plan a deployment live on node loss or drift")
    p.add_argument("deployment", help="deployment name")
    add_broker(p)
    p.add_argument("--model", required=True, help="the deployment's .tflite file")
    p.add_argument("--strategy", help="strategy for re-plans (default: the deployment's)")
    p.add_argument("--objective", choices=["latency", "throughput"],
                   help="objective of re-plans (default: the deployment's)")
    p.add_argument("--profile", help="profile file (default: profile the online nodes)")
    p.add_argument("--threshold", type=float, default=0.3,
                   help="relative drift that counts (default 0.3: 1.3x slower or faster)")
    p.add_argument("--intervals", type=int, default=3,
                   help="consecutive metric rounds beyond the threshold (default 3)")
    p.add_argument("--cooldown", type=float, default=5.0,
                   help="seconds between drift re-plans (default 5)")
    p.add_argument("--probe-links", type=float, default=0.0, metavar="S",
                   help="probe the deployment's links every S seconds (default: never)")
    p.add_argument("--probe-bytes", type=int, default=32_000,
                   help="payload of each link probe (default 32000)")
    p.add_argument("--margin", type=float, default=0.1,
                   help="predicted gain a join or link drift needs to re-plan (default 0.1)")
    p.add_argument("--no-join", action="store_true", help="do not re-plan onto joining nodes")
    p.add_argument("--join-cooldown", type=float, default=60.0,
                   help="seconds before the same node is judged again (default 60)")
    p.add_argument("--no-partial", action="store_true", help="always plan from scratch")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--max-replans", type=int, help="stop after this many re-plans")
    p.add_argument("--json", action="store_true", help="print one JSON document at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from planner.errors import FleetError
    from planner.live import DriftRule, ReplanPolicy, watch
    from planner.model.graph import load_model

    if args.threshold <= 0 or args.intervals < 1 or args.cooldown < 0:
        raise FleetError("--threshold must be > 0, --intervals >= 1, --cooldown >= 0")
    if args.margin < 0 or args.join_cooldown < 0 or not 0 < args.probe_bytes <= 64 << 20:
        raise FleetError("--margin and --join-cooldown must be >= 0, --probe-bytes in 1..64 MiB")
    graph = load_model(args.model)
    policy = ReplanPolicy(rule=DriftRule(threshold=args.threshold, intervals=args.intervals),
                          strategy=args.strategy, objective=args.objective,
                          partial=not args.no_partial,
                          cooldown_s=args.cooldown, link_probe_s=args.probe_links,
                          probe_bytes=args.probe_bytes, margin=args.margin,
                          join=not args.no_join, join_cooldown_s=args.join_cooldown)

    def say(ev) -> None:
        if not args.json:
            moved = ", ".join(f"[{mv.ops[0]}, {mv.ops[1]}) -> {'+'.join(mv.after)}"
                              for mv in ev.moved) or "nothing"
            print(f"epoch {ev.previous_epoch} -> {ev.epoch} ({ev.mode}, {ev.seconds:.2f} s): "
                  f"{ev.detail}; moved {moved}", flush=True)

    with connect(args) as fleet:
        profile = None
        if args.profile:
            from planner.planning.profile import load_profile

            profile = load_profile(args.profile)
        w = watch(fleet, args.deployment, graph, profile, policy, on_replan=say)
        if not args.json:
            print(f"watching {args.deployment} (Ctrl-C to stop)", flush=True)
        t0 = time.monotonic()
        try:
            while not (args.duration is not None and time.monotonic() - t0 >= args.duration
                       or args.max_replans is not None and len(w.replans) >= args.max_replans):
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        finally:
            w.stop()
    if args.json:
        print_json({"deployment": args.deployment, "replans": [e.to_json() for e in w.replans],
                    "errors": w.errors})
    return 0
