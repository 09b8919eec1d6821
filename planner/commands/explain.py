"""`tilefleet explain PLAN [--png FILE]`: stage and route tables, a picture of plan and timeline."""

from __future__ import annotations

import argparse

from planner.commands._common import human_bytes, print_table
from planner.commands._planning import load_context
from planner.errors import PlanError
from planner.planning.simulate import plan_memory, timeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show a plan's stages, routes and predictions")
    p.add_argument("plan", help="plan JSON")
    p.add_argument("--profile", help="profile JSON (default: the one the plan was made with)")
    p.add_argument("--model", help=".tflite file (default: the one the plan names)")
    p.add_argument("--png", metavar="FILE", help="draw the plan and a simulated timeline")
    p.add_argument("--frames", type=int, default=3, help="frames in the drawn timeline (default 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.png:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise PlanError(
                "explain --png needs matplotlib: pip install 'tilefleet[plot]'"
            ) from None
    plan, cm = load_context(args.plan, args.model, args.profile, need=bool(args.png))
    print(f"plan: strategy {plan.strategy}, objective {plan.objective}, model {plan.model_file} "
          f"({plan.model_sha256[:12]}), frames {plan.source} -> {plan.sink}")
    mem = plan_memory(plan, cm) if cm else {}
    rows = []
    for s in plan.stages:
        devs = ",".join(s.devices)
        secs = f"{max(cm.range_seconds(d, *s.ops) for d in s.devices) * 1e3:.3f}" if cm else "-"
        rows.append([s.id, f"[{s.ops[0]}, {s.ops[1]})", devs, secs])
    print_table(["stage", "ops", "device(s)", "compute ms"], rows)
    print_table(
        ["from", "to", "bytes", "tensors"],
        [
            [
                r.src,
                r.dst,
                human_bytes(r.bytes),
                ", ".join(r.tensors[:3]) + (" ..." if len(r.tensors) > 3 else ""),
            ]
            for r in plan.routes
        ],
    )
    pr = plan.predicted
    if pr:
        print(
            f"predicted: latency {pr['latency_s'] * 1e3:.3f} ms, "
            f"throughput {pr['throughput_fps']:.2f} fps, "
            f"{human_bytes(pr['bytes_per_frame'])} on the network per frame, "
            f"bottleneck {pr.get('bottleneck')}"
        )
        for d, r in pr.get("devices", {}).items():
            print(
                f"  {d}: busy {r['busy_s'] * 1e3:.3f} ms/frame, "
                f"memory {human_bytes(mem.get(d, r['memory_bytes']))}"
            )
    for k, v in plan.notes.items():
        print(f"  note {k}: {v}")
    if args.png:
        draw(plan, cm, args.png, args.frames)
        print(f"wrote {args.png}")
    return 0


def draw(plan, cm, path: str, frames: int) -> None:
    """Two panels: op ranges per device, and a Gantt chart of `frames` pipelined frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = plan.devices()
    colors = plt.get_cmap("tab10")
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 3 + 0.5 * len(devices) + 0.3 * len(devices) * 2)
    )
    for s in plan.stages:
        for d in s.devices:
            y = devices.index(d)
            top.barh(
                y, s.ops[1] - s.ops[0], left=s.ops[0], color=colors(s.id % 10), edgecolor="black"
            )
            top.text((s.ops[0] + s.ops[1]) / 2, y, f"S{s.id}", ha="center", va="center", fontsize=8)
    top.set_yticks(range(len(devices)), devices)
    top.set_xlabel("op index")
    top.set_title(f"{plan.strategy}: stages on devices")
    events = timeline(plan, cm, frames)
    resources = list(dict.fromkeys(e.resource for e in events))
    for e in events:
        y = resources.index(e.resource)
        bottom.barh(y, (e.end - e.start) * 1e3, left=e.start * 1e3, color=colors(e.frame % 10),
                    edgecolor="black", hatch="//" if e.kind == "send" else None)
    bottom.set_yticks(range(len(resources)), resources)
    bottom.set_xlabel("time (ms); colour = frame, hatched = transfer")
    bottom.set_title(f"simulated timeline, {frames} frames")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
