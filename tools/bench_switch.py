#!/usr/bin/env python3
"""Epoch switch benchmark: a re-plan that moves one stage of a 4-stage 224 px model.

    python tools/bench_switch.py [--rounds 3] [--size 224] [--embedded]

6 local agents on Mosquitto (the embedded broker with --embedded or when Mosquitto is
missing). A MobileNetV2-like float32 model is deployed twice (one deployment per mode)
as a 4-stage chain on the same 4 nodes (cuts balance MACs); each switch moves stage 2
between its node and the mode's own spare node (there and back, so the first move ships
the part and later ones find it stored), the modes interleaved so both see the same
machine load:

- `reload`: every stage of the new epoch loads a fresh interpreter (the behaviour before
  stage reuse; the deploy command's `reuse: false`);
- `reuse`: unchanged stages keep their running interpreter (`reuse: true`, the default).

Per switch it prints the time from "plan ready" (deploy_plan called with the new
plan) to the record published (clients move to the new epoch) and to the new epoch
active (old one dropped), the phases, the bytes shipped, how many stages loaded an
interpreter vs reused one, and the extra memory the new epoch's nodes hold while both
epochs are loaded (the agents' estimate: parts + arenas); after each switch one frame is
checked bit-exact against a single-interpreter run. Writes bench_results/switch.json.
Compare the two modes' ratio
from one run; the machine load is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _mosquitto import start_mosquitto  # noqa: E402  (tools/ is on sys.path when run)

from node.wire import messages as m  # noqa: E402
from planner.fleet import Fleet  # noqa: E402
from planner.fleet.deploy import deploy_plan  # noqa: E402
from planner.fleet.reference import LocalModel, mismatches, random_inputs  # noqa: E402
from planner.fleet.wiring import wire  # noqa: E402
from planner.local.localfleet import LocalFleet  # noqa: E402
from planner.model.graph import ModelGraph  # noqa: E402
from planner.modelbuild import recipes  # noqa: E402
from planner.planning.plan import chain, manual_plan  # noqa: E402

MODES = ("reload", "reuse")


def balanced_cuts(graph: ModelGraph, stages: int) -> list[int]:
    """Cut points that split the model's MACs into `stages` roughly equal ranges."""
    total = sum(op.macs for op in graph.ops)
    cuts, acc = [], 0.0
    for i, op in enumerate(graph.ops[:-1]):
        acc += op.macs
        if len(cuts) < stages - 1 and acc >= total * (len(cuts) + 1) / stages:
            cuts.append(i + 1)
    return cuts


def switch(fleet: Fleet, graph: ModelGraph, plan: Any, name: str, mode: str
           ) -> dict[str, Any]:
    """One timed switch of `name` to `plan`; phases from the record's `extra.switch`."""
    published: dict[str, float] = {}
    publish = fleet.control.publish_record

    def timed_publish(n: str, rec: Any) -> None:
        publish(n, rec)
        published.setdefault("t", time.perf_counter())

    fleet.control.publish_record = timed_publish  # type: ignore[method-assign]
    nodes = set(plan.devices())
    before = sum(fleet.control.command(n, m.StatusQuery, 10).memory.in_use_bytes
                 for n in nodes)
    t0 = time.perf_counter()
    try:
        rec = deploy_plan(fleet.control, graph, plan, name, reuse=mode == "reuse")
    finally:
        fleet.control.publish_record = publish  # type: ignore[method-assign]
    total = time.perf_counter() - t0
    sw = rec.extra.get("switch", {})
    record_s = published.get("t", t0) - t0
    return {"mode": mode, "epoch": rec.epoch, "live_s": total, "record_s": record_s,
            "bytes_shipped": sw.get("bytes_shipped", 0),
            **{k: sw.get(k, 0.0) for k in ("wire_s", "upload_s", "load_s")},
            "activate_s": round(total - record_s, 4),
            "loaded": sw.get("loaded"), "reused": sw.get("reused"),
            "extra_mb": round((sw.get("held_bytes", 0) - before) / 2**20, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="switches per mode (default 3)")
    ap.add_argument("--size", type=int, default=224, help="input size (default 224)")
    ap.add_argument("--embedded", action="store_true", help="use the embedded broker")
    ap.add_argument("--broker-nagle", action="store_true",
                    help="Mosquitto without set_tcp_nodelay (its default)")
    ap.add_argument("-o", "--output", default=str(ROOT / "bench_results" / "switch.json"))
    args = ap.parse_args()

    data = recipes.mobilenet_v2_like(input_size=args.size, dtype="float32", seed=0)
    graph = ModelGraph(data, f"mobilenet_v2_like_{args.size}")
    local_model = LocalModel(data)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-switch-") as d:
        broker, url = (None, None) if args.embedded else start_mosquitto(Path(d),
                                                                     not args.broker_nagle)
        (Path(d) / "agents").mkdir()
        try:
            with LocalFleet(6, url, workdir=Path(d) / "agents") as local, \
                    Fleet.connect(local.broker_url or "") as fleet:
                fleet.wait_for_nodes(6, 60)
                a, b, c, dd, *spares = local.names
                cuts = balanced_cuts(graph, 4)
                plans = {mode: [manual_plan(graph, chain(len(graph.ops), cuts, [a, b, c, dd])),
                                manual_plan(graph, chain(len(graph.ops), cuts, [a, b, spare, dd]))]
                         for mode, spare in zip(MODES, spares, strict=True)}
                parts = wire(graph, plans["reuse"][0].stages,
                                        {n: "tcp://x:1" for n in local.names}).parts
                part_bytes = [len(p.data) for p in parts.values()]
                x = random_inputs([{"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
                                   for t in (graph.tensors[i] for i in graph.inputs)], 0)
                want = local_model.run(x)
                print(f"model {graph.source}: {len(graph.ops)} ops, {len(data) / 1e6:.1f} MB; "
                      f"cuts {cuts}; part sizes "
                      f"{', '.join(f'{s / 1e6:.2f}' for s in part_bytes)} MB")
                for mode in MODES:
                    name = f"switch-{mode}"
                    deploy_plan(fleet.control, graph, plans[mode][0], name)
                for r in range(args.rounds):
                    for mode in MODES if r % 2 == 0 else MODES[::-1]:
                        name = f"switch-{mode}"
                        target = plans[mode][(r + 1) % 2]
                        row = switch(fleet, graph, target, name, mode)
                        dep = fleet.deployment(name, timeout_s=30)
                        deadline = time.monotonic() + 5
                        while dep.epoch != row["epoch"] and time.monotonic() < deadline:
                            time.sleep(0.01)
                        row["exact"] = not mismatches(dep.infer(x, timeout=60), want)
                        dep.close()
                        row["load_1m"] = os.getloadavg()[0]
                        rows.append(row)
                        print(f"{mode:6s} epoch {row['epoch']}: live {row['live_s']:.3f} s "
                              f"(record {row['record_s']:.3f} s; wire {row['wire_s']:.3f}, "
                              f"upload {row['upload_s']:.3f}, load {row['load_s']:.3f}, "
                              f"activate {row['activate_s']:.3f}); shipped "
                              f"{row['bytes_shipped'] / 1e6:.2f} MB; loaded {row['loaded']}, "
                              f"reused {row['reused']}, +{row['extra_mb']} MiB held; "
                              f"exact {row['exact']}; "
                              f"load {row['load_1m']:.2f}")
                for mode in MODES:
                    fleet.undeploy(f"switch-{mode}")
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait()
    summary: dict[str, Any] = {}
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {k: statistics.median(r[k] for r in mine)
                         for k in ("live_s", "record_s", "load_s", "extra_mb")
                         if all(k in r for r in mine)}
        summary[mode]["bytes_shipped_first"] = mine[0]["bytes_shipped"] if mine else 0
    if summary["reload"].get("live_s"):
        summary["live_ratio_reuse_over_reload"] = (summary["reuse"]["live_s"]
                                                   / summary["reload"]["live_s"])
    print(f"broker: {'embedded' if url is None else 'mosquitto'}"
          f"{' with Nagle on' if args.broker_nagle else ''}")
    print("median live: " + ", ".join(f"{m} {summary[m].get('live_s', 0):.3f} s "
                                      f"(+{summary[m].get('extra_mb', 0)} MiB held during "
                                      "the switch)" for m in MODES)
          + f"; reuse/reload {summary.get('live_ratio_reuse_over_reload', 0):.2f}; "
          f"all exact: {all(r['exact'] for r in rows)}; load {os.getloadavg()[0]:.2f}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    broker_kind = "embedded" if url is None else (
        "mosquitto (Nagle on)" if args.broker_nagle else "mosquitto (set_tcp_nodelay)")
    out.write_text(json.dumps({"model": graph.source, "size": args.size, "cuts": cuts,
                               "broker": broker_kind,
                               "part_bytes": part_bytes, "rows": rows, "summary": summary},
                              indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
