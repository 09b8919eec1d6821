"""Cost of one agent hop versus raw pyzmq, and the agent's idle memory.

Starts a broker (Mosquitto if installed, else the demo's embedded amqtt broker), one agent
process with a forward
stage per tensor size (`part: null`, routes its input to the client), and the baseline: a
raw pyzmq relay process, PULL bound -> PUSH connected to the client, which forwards the
received frames untouched (`copy=False`) and only reads the header's `reply` to route
(the least any hop must do). Client, agent and relay use the same layout (one process
each, loopback TCP, the same frames). The client sends a tensor, the hop sends it back
to the client's PULL socket. A second baseline, raw_malloc, is the same relay with the
glibc allocator settings the agent applies to itself (node.dataplane.tune_allocator), so
the agent's figures cannot come from allocator tuning alone.

- rtt: one message at a time; per round the median, then the median over rounds;
- stream: 8 messages in flight, seconds per message over a round, median over rounds;
- cpu: the hop process's CPU time (all threads, zmq I/O included) per streamed message.

After a warm-up, rounds visit the hops in ABBA order so drift on a shared machine hits
all of them; ratios are medians of the per-round agent/baseline ratios. Headers are
encoded before the clock starts, so the client's own cost does not dilute the ratios.
Prints a table and writes bench_results/node_hop.json.

    python tools/bench_node_hop.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _mosquitto import start_mosquitto  # noqa: E402  (tools/ is on sys.path when run)

from node.wire import frames as F  # noqa: E402
from node.wire import messages as M  # noqa: E402
from planner.fleet.control import Control  # noqa: E402

RELAY = """
import sys, zmq
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL); pull.bind(sys.argv[1])
socks = {}
import json
while True:
    frames = pull.recv_multipart(copy=False)
    reply = json.loads(frames[0].bytes)["reply"]  # the same routing decision the agent makes
    s = socks.get(reply)
    if s is None:
        s = socks[reply] = ctx.socket(zmq.PUSH); s.connect(reply)
    s.send_multipart(frames, copy=False)
"""

ROUNDS = 21
SIZES = {"1KB": (1, 256), "1MB": (1, 250_000), "10MB": (1, 2_500_000)}  # float32
MALLOC = (32 << 20, 64 << 20)  # node.dataplane.tune_allocator's defaults (mmap, trim)
PER_ROUND = {"1KB": (200, 400), "1MB": (40, 120), "10MB": (8, 24)}  # (rtt, stream) messages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(tmp: Path) -> tuple[subprocess.Popen, str]:
    """Mosquitto if installed, else the demo's embedded broker (planner.local.broker)."""
    proc, url = start_mosquitto(tmp)
    if proc is not None and url is not None:
        return proc, url
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "planner.local.broker", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"mqtt://127.0.0.1:{port}"


def wait_online(ctl: Control, node: str, timeout_s: float) -> dict[str, Any]:
    """The node's announced resources once it is online (TimeoutError otherwise)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        res = ctl.online().get(node)
        if res and "data_endpoint" in res:
            return res
        time.sleep(0.05)
    raise TimeoutError(f"node {node!r} not online after {timeout_s:.0f} s")


class Hop:
    """Client side: PUSH to a hop endpoint, PULL results on our reply endpoint."""

    def __init__(self, ctx: zmq.Context, endpoint: str, deployment: str, pid: int) -> None:
        self.proc = psutil.Process(pid)  # the hop process, for its CPU time per message
        self.push = ctx.socket(zmq.PUSH)
        self.push.connect(endpoint)
        self.pull = ctx.socket(zmq.PULL)
        self.reply = f"tcp://127.0.0.1:{self.pull.bind_to_random_port('tcp://127.0.0.1')}"
        self.deployment = deployment
        self.seq = 0

    def messages(self, x: np.ndarray, n: int) -> list[list]:
        """n messages with fresh request ids, encoded before timing starts."""
        out = []
        for _ in range(n):
            self.seq += 1
            h = F.Header("data", self.deployment, 0, str(self.seq), "fwd", self.reply,
                         (F.meta_for("x", x),), t0=time.time())
            out.append(F.encode(h, [x]))
        return out

    def round_trips(self, msgs: list[list]) -> list[float]:
        times = []
        for fr in msgs:
            t = time.perf_counter()
            self.push.send_multipart(fr, copy=False)
            self.pull.recv_multipart(copy=False)
            times.append(time.perf_counter() - t)
        return times

    def stream(self, msgs: list[list], window: int = 8) -> tuple[float, float]:
        """Seconds per message with up to `window` in flight, and hop CPU s per message."""
        n = len(msgs)
        c = self.proc.cpu_times()
        t = time.perf_counter()
        sent = got = 0
        while got < n:
            while sent < n and sent - got < window:
                self.push.send_multipart(msgs[sent], copy=False)
                sent += 1
            self.pull.recv_multipart(copy=False)
            got += 1
        dt = time.perf_counter() - t
        c2 = self.proc.cpu_times()
        return dt / n, (c2.user + c2.system - c.user - c.system) / n


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def measure(hops: dict[str, Hop], x: np.ndarray, n_rtt: int, n_stream: int, rounds: int
            ) -> dict[str, Any]:
    """Warm up, then `rounds` interleaved rounds of round trips and streams per hop.

    Each round gives per hop the median round trip and the stream's time per message;
    ratios are medians over rounds of agent/raw within the round (paired, so a busy
    spell of the shared machine during one round does not decide the figure).
    """
    for h in hops.values():  # connections, allocator, caches
        h.round_trips(h.messages(x, max(5, n_rtt // 4)))
        h.stream(h.messages(x, max(16, n_stream // 4)))
    per: dict[str, dict[str, list[float]]] = {k: {"rtt": [], "stream": [], "cpu": []}
                                              for k in hops}
    labels = list(hops)
    for i in range(rounds):
        for label in labels if i % 2 == 0 else labels[::-1]:  # ABBA: cancels linear drift
            h = hops[label]
            per[label]["rtt"].append(statistics.median(h.round_trips(h.messages(x, n_rtt))))
            wall, cpu = h.stream(h.messages(x, n_stream))
            per[label]["stream"].append(wall)
            per[label]["cpu"].append(cpu)
    row: dict[str, Any] = {"bytes": x.nbytes}
    for label in hops:
        # CPU time ticks at 10 ms: a mean over every round, not a median of rounds
        row[f"{label}_cpu_s"] = statistics.fmean(per[label].pop("cpu"))
        for kind in ("rtt", "stream"):
            q1, med, q3 = quartiles(per[label][kind])
            row[f"{label}_{kind}_s"], row[f"{label}_{kind}_iqr_s"] = med, q3 - q1
            row[f"{label}_{kind}_rounds_s"] = per[label][kind]
    for base in labels[1:]:  # agent against each baseline
        sfx = "" if base == "raw" else f"_vs_{base}"
        row[f"ratio_cpu{sfx}"] = row["agent_cpu_s"] / row[f"{base}_cpu_s"]
        for kind in ("rtt", "stream"):
            a, r = per["agent"][kind], per[base][kind]
            row[f"ratio_{kind}{sfx}"] = statistics.median(x / y for x, y in zip(a, r, strict=True))
            row[f"ratio_{kind}_of_medians{sfx}"] = row[f"agent_{kind}_s"] / row[f"{base}_{kind}_s"]
        row[f"overhead_s{sfx}"] = statistics.median(
            x - y for x, y in zip(per["agent"]["rtt"], per[base]["rtt"], strict=True))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and messages")
    ap.add_argument("--rounds", type=int, default=0, help=f"rounds per size ({ROUNDS})")
    ap.add_argument("-o", default=str(REPO / "bench_results" / "node_hop.json"))
    args = ap.parse_args()
    rounds = args.rounds or (5 if args.quick else ROUNDS)
    per_round = {k: (max(4, r // 4), max(16, s // 4)) if args.quick else (r, s)
                 for k, (r, s) in PER_ROUND.items()}
    tmp = Path(tempfile.mkdtemp(prefix="bench-hop-"))
    broker, url = start_broker(tmp)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agent = subprocess.Popen([sys.executable, "-m", "node.cli", "--name", "bench",
                              "--broker", url, "--board", "laptop", "--host", "127.0.0.1",
                              "--data-port", "0", "--state-dir", str(tmp / "state"),
                              "--log-level", "WARNING"], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL)
    relay_ep, tuned_ep = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    relay = subprocess.Popen([sys.executable, "-c", RELAY, relay_ep])
    tuned = subprocess.Popen([sys.executable, "-c", RELAY, tuned_ep], env={**os.environ,
                             "MALLOC_MMAP_THRESHOLD_": str(MALLOC[0]),
                             "MALLOC_TRIM_THRESHOLD_": str(MALLOC[1])})
    ctl = Control(url, watch_metrics=False)
    ctx = zmq.Context()
    load0 = os.getloadavg()[0]
    try:
        res = wait_online(ctl, "bench", 30)
        time.sleep(1.0)  # idle: after start-up, no models loaded
        idle_rss = psutil.Process(agent.pid).memory_info().rss
        for name, shape in SIZES.items():
            stage = M.StageSpec("fwd", None, (M.InputSpec("x", "float32", shape),),
                                (M.Route("x", "client"),))
            ctl.command("bench", M.Deploy, deployment=name, epoch=0, stages=(stage,))
        rows = {}
        for name, shape in SIZES.items():
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            hops = {"agent": Hop(ctx, res["data_endpoint"], name, agent.pid),
                    "raw": Hop(ctx, relay_ep, name, relay.pid),
                    "raw_malloc": Hop(ctx, tuned_ep, name, tuned.pid)}
            rows[name] = measure(hops, x, *per_round[name], rounds)
        out: dict[str, Any] = {"tensors": rows, "idle_rss_bytes": idle_rss,
               "per_hop_overhead_1KB_s": rows["1KB"]["overhead_s"],
               "targets": {"ratio_1MB_10MB": 1.15, "overhead_1KB_s": 150e-6,
                           "idle_rss_bytes": 60 << 20},
               "baseline": "pyzmq relay process: PULL -> PUSH of the received frames "
                           "(copy=False), routed by the header's reply",
               "rounds": rounds, "per_round": {k: {"rtt": r, "stream": s}
                                               for k, (r, s) in per_round.items()},
               "stream_window": 8, "load_avg_1m": [load0, os.getloadavg()[0]],
               "runtime": res["runtime"], "python": sys.version.split()[0],
               "zmq": zmq.zmq_version(), "pyzmq": zmq.__version__, "cpus": os.cpu_count(),
               "quick": args.quick}
        print(f"baseline raw: {out['baseline']}")
        print(f"baseline raw_malloc: the same relay with the glibc allocator settings the agent "
              f"applies (node.dataplane.tune_allocator: mmap {MALLOC[0] >> 20} MiB, trim "
              f"{MALLOC[1] >> 20} MiB)")
        print(f"{rounds} rounds per size, hops interleaved (ABBA); times: median over rounds "
              "(IQR); ratios: median of per-round agent/baseline; stream: 8 in flight; cpu: "
              "hop process CPU per streamed message, all threads")
        print(f"{'tensor':>6} {'hop':>10} {'rtt':>18} {'stream':>18} {'cpu':>9} "
              f"{'rtt ratio':>9} {'stream ratio':>12} {'cpu ratio':>9}")

        def ms(r: dict[str, Any], hop: str, kind: str) -> str:
            return f"{r[f'{hop}_{kind}_s'] * 1e3:7.3f} ({r[f'{hop}_{kind}_iqr_s'] * 1e3:5.3f})ms"

        for name, r in rows.items():
            for hop, sfx in (("agent", None), ("raw", ""), ("raw_malloc", "_vs_raw_malloc")):
                ratios = "" if sfx is None else (
                    f" {r[f'ratio_rtt{sfx}']:9.2f} {r[f'ratio_stream{sfx}']:12.2f} "
                    f"{r[f'ratio_cpu{sfx}']:9.2f}")
                print(f"{name if hop == 'agent' else '':>6} {hop:>10} {ms(r, hop, 'rtt'):>18} "
                      f"{ms(r, hop, 'stream'):>18} {r[f'{hop}_cpu_s'] * 1e6:7.1f}us{ratios}")
        print(f"per-hop overhead, 1 KB tensor: {rows['1KB']['overhead_s'] * 1e6:.0f} us vs raw, "
              f"{rows['1KB']['overhead_s_vs_raw_malloc'] * 1e6:.0f} us vs raw_malloc "
              "(target < 150 us); 1 MB / 10 MB ratios target <= 1.15")
        print(f"agent idle RSS: {idle_rss / 2**20:.1f} MiB (target < 60 MiB); "
              f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
        Path(args.o).parent.mkdir(parents=True, exist_ok=True)
        Path(args.o).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.o}")
    finally:
        ctl.close()
        ctx.destroy(linger=0)
        for p in (agent, relay, tuned, broker):
            p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
