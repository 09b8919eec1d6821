"""The published scenarios on emulated boards: every strategy in one run, predicted vs measured.

    python tools/bench_anchors.py --scenario fused_tiles|hetero_pipeline|data_plane|all
                                  [--quick] [--frames N] [--out benchmarks/results]

Each scenario brings up a testbed (planner/testbed: one agent per board in its own
network namespace, CPU held to the board class's calibrated speed, links shaped), profiles
the boards once, then for every strategy plans, deploys, warms up and measures latency
(one frame at a time, median) and throughput (8 frames in flight), checks every result
against a local single-interpreter run, and puts the planner's prediction beside it.
Ratios are taken within one run (the machine is shared and noisy). It writes
`<out>/<scenario>.json` and `<out>/<scenario>.png` and refreshes the scenario's table in
`benchmarks/README.md` (between its markers).

Scenarios:
- fused_tiles (DeepThings): a YOLO-like int8 detector on 1, 2, 4, 6 Pi-3-class boards;
  `tiles` and `auto` against `ftp` (equal grid, fixed depth) and one board.
- hetero_pipeline (PipeEdge, exo): mixes of board classes; `throughput` against `even`,
  `memory` and the ideal (the sum of each board's own throughput on the whole model).
- data_plane: a stream of activations through a forward stage on a shaped link: what
  fraction of the link's rate it reaches.
Without root (no namespaces or cgroups) the boards are padded (`--emulate-speed`) and
every row says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner.fleet import Fleet  # noqa: E402
from planner.fleet.bench import latency, run_bench  # noqa: E402
from planner.model.graph import ModelGraph  # noqa: E402
from planner.modelbuild import recipes  # noqa: E402
from planner.planning.constraints import Constraints  # noqa: E402
from planner.planning.strategies import STRATEGIES  # noqa: E402
from planner.testbed import Testbed, make_spec  # noqa: E402

README = ROOT / "benchmarks" / "README.md"


@dataclass(frozen=True)
class Row:
    """One testbed set-up and the plans compared on it."""

    label: str
    boards: str
    strategies: tuple[str, ...]
    link: str = ""
    model: str = "yolo"
    dtype: str = "int8"
    input_size: int = 256
    single: bool = True  # also measure the best single board (`latency --max-nodes 1`)
    ideal: bool = False  # also measure each board class alone (the heterogeneous ideal)
    objective: str = "latency"


@dataclass
class Result:
    strategy: str
    stages: int = 0
    devices: list[str] = field(default_factory=list)
    predicted: dict[str, float] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)
    identical: bool | None = None
    error: str = ""


def scenario_rows(name: str, quick: bool) -> list[Row]:
    """The rows of one scenario (fewer and smaller under --quick)."""
    if name == "fused_tiles":
        counts = (1, 2) if quick else (1, 2, 4, 6)
        size = 160 if quick else 256
        return [Row(f"{n} x rpi3", f"rpi3:{n}", ("tiles", "auto", "ftp") if n > 1 else (),
                    input_size=size) for n in counts]
    if name == "hetero_pipeline":
        mixes = ["rpi3:1,rpi4:1"] if quick else ["rpi3:1,rpi4:1", "rpi3:2,rpi5:1",
                                                 "rpi3:2,rpi4:2,rpi5:2", "rpi3:4,rpi4:2,rpi5:2"]
        return [Row(m, m, ("throughput", "even", "memory"), model="mobilenet_v2",
                    input_size=128 if quick else 224, ideal=True, objective="throughput")
                for m in mixes]
    raise SystemExit(f"unknown scenario {name!r}")


def build(row: Row) -> bytes:
    return recipes.RECIPES[row.model](input_size=row.input_size, dtype=row.dtype)


def measure(fleet: Fleet, graph: ModelGraph, model: bytes, plan: Any, name: str,
            frames: int) -> tuple[dict[str, float], bool]:
    """Deploy `plan`, warm up, measure latency (window 1) and throughput (window 8)."""
    dep = fleet.deploy(graph, name=name, plan=plan)
    try:
        run_bench(dep, max(8, frames // 4), window=8)  # warm-up: caches, XNNPACK packing
        lat = latency(dep, frames)
        thr = run_bench(dep, frames * 2, window=8, reference=model)
        ok = thr["mismatches"] == 0 and thr["errors"] == 0
        return {"latency_s": lat["latency_s"], "throughput_fps": thr["throughput_fps"]}, ok
    finally:
        fleet.undeploy(name)


def run_row(row: Row, frames: int) -> dict[str, Any]:
    """Bring up the row's testbed and measure every plan on it."""
    model = build(row)
    graph = ModelGraph(model, row.model)
    spec = make_spec(row.boards, link=row.link or None, name="anchors")
    t0 = time.monotonic()
    out: dict[str, Any] = {"label": row.label, "boards": row.boards, "model": row.model,
                           "dtype": row.dtype, "input_size": row.input_size, "results": []}
    with Testbed(spec) as tb, Fleet.connect(tb.broker_url) as fleet:
        out["emulation"] = tb.emulation
        out["notes"] = tb.notes
        fleet.wait_for_nodes(len(tb.nodes))
        profile = fleet.profile(graph)
        plans: list[tuple[str, Any]] = []
        if row.single:
            plans.append(("single", STRATEGIES["latency"](graph, profile,
                                                          Constraints(max_nodes=1))))
        if row.ideal:
            for kind in sorted({n.board for n in tb.nodes}):
                one = next(n.name for n in tb.nodes if n.board == kind)
                others = tuple(n.name for n in tb.nodes if n.name != one)
                plans.append((f"alone:{kind}", STRATEGIES["latency"](
                    graph, profile, Constraints(exclude=others, max_nodes=1))))
        for s in row.strategies:
            plans.append((s, STRATEGIES[s](graph, profile,
                                           Constraints(objective=row.objective))))
        for i, (label, plan) in enumerate(plans):
            r = Result(label, len(plan.stages), plan.devices(), dict(plan.predicted))
            try:
                r.measured, r.identical = measure(fleet, graph, model, plan, f"bench-{i}",
                                                  frames)
            except Exception as exc:  # a failing plan is a result, not the end of the run
                r.error = str(exc).splitlines()[0]
            out["results"].append(r.__dict__)
            print(f"  {row.label:24} {label:14} " + describe(r), flush=True)
    out["seconds"] = round(time.monotonic() - t0, 1)
    summarise(out)
    return out


def describe(r: Result) -> str:
    if r.error:
        return f"error: {r.error}"
    p, m = r.predicted, r.measured
    return (f"lat {m['latency_s'] * 1e3:7.1f} ms (pred {p.get('latency_s', 0) * 1e3:7.1f}, "
            f"{err(p.get('latency_s'), m['latency_s']):+5.0%})  "
            f"thr {m['throughput_fps']:6.1f} fps (pred {p.get('throughput_fps', 0):6.1f}, "
            f"{err(p.get('throughput_fps'), m['throughput_fps']):+5.0%})  "
            f"{'identical' if r.identical else 'MISMATCH'}  on {len(r.devices)} device(s)")


def err(pred: float | None, meas: float) -> float:
    return (pred - meas) / meas if pred and meas else float("nan")


def summarise(row: dict[str, Any]) -> None:
    """Speed-ups over the single board and, for mixes, the fraction of the ideal."""
    res = {r["strategy"]: r for r in row["results"] if not r["error"]}
    single = res.get("single")
    alone = [r for k, r in res.items() if k.startswith("alone:")]
    ideal = None
    if alone:
        counts: dict[str, int] = {}
        for part in row["boards"].split(","):
            kind, n = part.split(":")
            counts[kind] = counts.get(kind, 0) + int(n.split("@")[0])
        ideal = sum(r["measured"]["throughput_fps"] * counts[r["strategy"][6:]] for r in alone)
        row["ideal_fps"] = ideal
    for r in row["results"]:
        if r["error"]:
            continue
        m = r["measured"]
        if single and r is not single:
            r["latency_speedup"] = single["measured"]["latency_s"] / m["latency_s"]
            r["throughput_speedup"] = m["throughput_fps"] / single["measured"]["throughput_fps"]
        if ideal:
            r["of_ideal"] = m["throughput_fps"] / ideal
        r["latency_error"] = err(r["predicted"].get("latency_s"), m["latency_s"])
        r["throughput_error"] = err(r["predicted"].get("throughput_fps"), m["throughput_fps"])


def table(doc: dict[str, Any]) -> str:
    """Markdown rows for benchmarks/README.md."""
    lines = ["| boards | plan | devices | latency ms (pred) | speed-up | fps (pred) | "
             "x single | of ideal | identical |", "|---|---|---|---|---|---|---|---|---|"]
    for row in doc["rows"]:
        for r in row["results"]:
            if r["error"]:
                lines.append(f"| {row['label']} | {r['strategy']} | | error: {r['error']} "
                             "| | | | | |")
                continue
            m, p = r["measured"], r["predicted"]
            lines.append(
                f"| {row['label']} | {r['strategy']} | {len(r['devices'])} | "
                f"{m['latency_s'] * 1e3:.1f} ({p.get('latency_s', 0) * 1e3:.1f}) | "
                f"{_x(r.get('latency_speedup'))} | {m['throughput_fps']:.1f} "
                f"({p.get('throughput_fps', 0):.1f}) | {_x(r.get('throughput_speedup'))} | "
                f"{_pct(r.get('of_ideal'))} | {'yes' if r['identical'] else 'NO'} |")
    return "\n".join(lines)


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v else ""


def _pct(v: float | None) -> str:
    return f"{v:.0%}" if v else ""


def plot(doc: dict[str, Any], path: Path) -> None:
    """Measured and predicted latency and throughput per row and plan."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, unit, scale in ((axes[0], "latency_s", "latency (ms)", 1e3),
                                 (axes[1], "throughput_fps", "throughput (fps)", 1.0)):
        names = sorted({r["strategy"] for row in doc["rows"] for r in row["results"]})
        labels = [row["label"] for row in doc["rows"]]
        width = 0.8 / max(1, len(names))
        for k, name in enumerate(names):
            xs, ms, ps = [], [], []
            for i, row in enumerate(doc["rows"]):
                r = next((r for r in row["results"] if r["strategy"] == name and not r["error"]),
                         None)
                if r:
                    xs.append(i + k * width)
                    ms.append(r["measured"][key] * scale)
                    ps.append(r["predicted"].get(key, 0) * scale)
            ax.bar(xs, ms, width, label=name)
            ax.scatter(xs, ps, marker="_", color="black", s=200, zorder=3)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, fontsize=8)
        ax.set_ylabel(unit)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{doc['scenario']} ({doc['emulation']}): bars measured, ticks predicted")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def refresh_readme(doc: dict[str, Any]) -> None:
    """Replace the scenario's table in benchmarks/README.md between its markers."""
    begin, end = f"<!-- {doc['scenario']}:begin -->", f"<!-- {doc['scenario']}:end -->"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    block = (f"{begin}\n{doc['command']} — {doc['when']}, emulation {doc['emulation']}, "
             f"{doc['seconds']:.0f} s\n\n{table(doc)}\n{end}")
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## {doc['scenario']}\n\n{block}\n"
    README.parent.mkdir(parents=True, exist_ok=True)
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="all",
                    help="fused_tiles, hetero_pipeline or all")
    ap.add_argument("--quick", action="store_true", help="fewer, smaller rows (CI)")
    ap.add_argument("--frames", type=int, default=0, help="frames per measurement")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-readme", action="store_true", help="leave benchmarks/README.md alone")
    args = ap.parse_args(argv)
    names = ["fused_tiles", "hetero_pipeline"] if args.scenario == "all" else [args.scenario]
    failed: list[str] = []
    frames = args.frames or (20 if args.quick else 60)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        t0 = time.monotonic()
        print(f"{name}:", flush=True)
        rows = [run_row(r, frames) for r in scenario_rows(name, args.quick)]
        emus = sorted({r.get("emulation", "?") for r in rows})
        doc = {"scenario": name, "quick": args.quick, "frames": frames, "rows": rows,
               "emulation": "/".join(emus), "seconds": time.monotonic() - t0,
               "when": time.strftime("%Y-%m-%d"),
               "command": f"`python tools/bench_anchors.py --scenario {name}"
                          f"{' --quick' if args.quick else ''}`"}
        (out / f"{name}.json").write_text(json.dumps(doc, indent=1))
        plot(doc, out / f"{name}.png")
        if not args.no_readme:
            refresh_readme(doc)
        errs = [abs(r[k]) for row in rows for r in row["results"] if not r["error"]
                for k in ("latency_error", "throughput_error") if r.get(k) == r.get(k)]
        if errs:
            print(f"{name}: prediction error median {statistics.median(errs):.0%}, "
                  f"max {max(errs):.0%}; {doc['seconds']:.0f} s")
        failed += [f"{name} {row['label']} {r['strategy']}: {r['error'] or 'not identical'}"
                   for row in rows for r in row["results"] if r["error"] or not r["identical"]]
    for f in failed:  # a plan that fails or differs from the whole model is a defect
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
