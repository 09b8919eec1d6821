#!/usr/bin/env python3
"""What the watcher's link probes cost a running stream (planner/testbed, needs root).

    python tools/bench_linkprobe.py [--rounds 3] [--phase 2] [--rate 40] [--every 1]

Two full-speed laptop agents in a testbed's network namespaces run a 2-stage chain of
the 64 px MobileNetV2-like model cut where 98 KB cross n0 -> n1 per frame; a checked
stream runs throughout. The n0 -> n1 link is left unshaped, then shaped to `--rate`
Mbit/s (that pair only, tc tbf: `Testbed.set_link(n0, rate, peer=n1)`, so the transfer
is the bottleneck). For each probe size, phases without and with probing (n0 probes
n1 every `--every` s with that payload, twice, as `ReplanPolicy.link_probe_s` does)
alternate; prints frames per second of each and the per-round ratio with/without (median), and the
predicted cost: the probe's share of the link's time, 2 x bytes / (rate x every).
Writes bench_results/linkprobe.json. Measured on the earlier namespace lab (load 1.6-2.1,
a 32 KB tbf burst): on the 40 Mbit/s bottleneck 256 KB probes every second cost 10-11%
of the frames (as predicted), 32 KB ones ~1%; on the unshaped link (CPU-bound, ~2000
fps) both are within the noise of alternating phases.
A probe must be larger than the shaper's burst (the testbed's tbf: 2 ms at the rate,
10 KB at 40 Mbit/s), or it measures the burst, not the rate. On the testbed (load 3.2,
its default arguments): 40 Mbit/s, 256 KB x0.897 (10.2% predicted), 32 KB x0.979;
unshaped ~400 fps, CPU-bound and within the noise again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.wire import messages as m  # noqa: E402
from planner.fleet import Fleet  # noqa: E402
from planner.fleet.reference import LocalModel, random_inputs  # noqa: E402
from planner.local.drills import Stream  # noqa: E402
from planner.model.graph import ModelGraph  # noqa: E402
from planner.modelbuild import recipes  # noqa: E402
from planner.planning.plan import chain  # noqa: E402
from planner.testbed import Testbed, TestbedError, make_spec, net  # noqa: E402

CUT = 6  # 98 KB of activation cross this cut per frame at 64 px


class Prober:
    """n0 probes n1 every `every` s with `nbytes` (2 repetitions), in a thread."""

    def __init__(self, fleet: Fleet, a: str, b: str, nbytes: int, every: float) -> None:
        self.fleet, self.a, self.nbytes, self.every = fleet, a, nbytes, every
        self.endpoint = fleet.node(b).service_endpoint
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            t = time.monotonic()
            self.fleet.control.command(self.a, m.Probe, 30, endpoint=self.endpoint,
                                       nbytes=self.nbytes, repetitions=2)
            self.seconds.append(time.monotonic() - t)
            if self._stop.wait(max(0.0, self.every - (time.monotonic() - t))):
                return

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def phase_fps(s: Stream, seconds: float) -> float:
    t = time.monotonic()
    time.sleep(seconds)
    return s.fps(t, time.monotonic())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--phase", type=float, default=2.0, help="seconds per phase")
    ap.add_argument("--rate", type=float, default=40.0, help="shaped rate, Mbit/s")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between probes")
    ap.add_argument("--sizes", default="32000,256000", help="probe payloads, bytes")
    ap.add_argument("-o", "--output", default=str(ROOT / "bench_results" / "linkprobe.json"))
    a = ap.parse_args(argv)
    reason = net.reason()
    if reason:
        print(f"bench_linkprobe: cannot run here: {reason}", file=sys.stderr)
        return 2
    try:
        return run(a)
    except TestbedError as exc:
        print(f"bench_linkprobe: error: {exc}", file=sys.stderr)
        return 2


def run(a: argparse.Namespace) -> int:
    """The benchmark proper; 0 when every frame was identical to the local model."""
    sizes = [int(x) for x in a.sizes.split(",")]
    data = recipes.mobilenet_v2_like(input_size=64, dtype="float32", seed=0)
    graph = ModelGraph(data, "mobilenet_v2_like_64")
    rows = []
    spec = make_spec("laptop:2", name="bench-linkprobe", emulation="none")
    with Testbed(spec) as tb, Fleet.connect(tb.broker_url) as fleet:
        fleet.wait_for_nodes(2, 60)
        n0, n1 = (n.name for n in tb.nodes)
        dep = fleet.deploy(graph, name="probecost", timeout_s=5.0, retries=5,
                           stages=chain(len(graph.ops), [CUT], [n0, n1]))
        local = LocalModel(data)
        xs = [random_inputs(dep.record.model["inputs"], s) for s in range(8)]
        s = Stream(dep, xs, [local.run(x) for x in xs]).start()
        time.sleep(1.0)
        try:
            for rate in (None, a.rate):
                if rate:
                    tb.set_link(n0, rate, peer=n1)
                    time.sleep(1.0)
                for nbytes in sizes:
                    off, on, ratios, probe_s = [], [], [], []
                    for _ in range(a.rounds):
                        f0 = phase_fps(s, a.phase)
                        with Prober(fleet, n0, n1, nbytes, a.every) as p:
                            f1 = phase_fps(s, a.phase)
                        off.append(f0)
                        on.append(f1)
                        ratios.append(f1 / max(f0, 1e-9))
                        probe_s += p.seconds
                    row = {"link_mbit": rate, "probe_bytes": nbytes, "every_s": a.every,
                           "fps_without": statistics.median(off),
                           "fps_with": statistics.median(on),
                           "ratio_median": statistics.median(ratios), "ratios": ratios,
                           "probe_command_s_median": statistics.median(probe_s),
                           "predicted_link_share": (2 * nbytes * 8 / (rate * 1e6 * a.every))
                           if rate else None}
                    rows.append(row)
                    print(f"link {rate or 'unshaped'!s:>8} Mbit/s  probe {nbytes:>7} B every "
                          f"{a.every:g} s: {row['fps_without']:7.1f} -> {row['fps_with']:7.1f} fps"
                          f" (x{row['ratio_median']:.3f} median of {a.rounds}; probe command "
                          f"{row['probe_command_s_median'] * 1e3:.0f} ms"
                          + (f"; link share predicted {row['predicted_link_share']:.1%})"
                             if rate else ")"), flush=True)
        finally:
            s.stop()
        results = s.results
        exact = s.identical == s.results and not s.errors
        dep.undeploy()
    load = os.getloadavg()[0]
    print(f"{results} frames, all identical: {exact}; load average (1 min) {load:.2f}")
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "frames": results, "all_identical": exact,
                               "loadavg_1m": load, "phase_s": a.phase, "rounds": a.rounds},
                              indent=2))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
