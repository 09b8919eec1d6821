"""Cost of one agent hop versus raw pyzmq, and the agent's idle memory.

Starts a broker (Mosquitto if installed, else amqtt), one agent process and a raw pyzmq
relay process (PULL -> PUSH, no decoding). The client sends a tensor, the hop forwards
it back to the client's PULL socket; we time round trips (one message at a time) and
streams (many in flight). Prints a table and writes bench_results/node_hop.json.

    python tools/bench_node_hop.py [--quick]
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

import numpy as np
import psutil
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.wire import frames as F  # noqa: E402
from node.wire import messages as M  # noqa: E402
from tests.node.harness import Commander, cid  # noqa: E402

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

ROUNDS = 10
SIZES = {"1KB": (1, 256), "1MB": (1, 250_000), "10MB": (1, 2_500_000)}  # float32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if os.path.exists(mosq):
        conf = tmp / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        proc = subprocess.Popen([mosq, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    else:
        from tests.conftest import _AMQTT
        proc = subprocess.Popen([sys.executable, "-c", _AMQTT % port],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"mqtt://127.0.0.1:{port}"


class Hop:
    """Client side: PUSH to a hop endpoint, PULL results on our reply endpoint."""

    def __init__(self, ctx: zmq.Context, endpoint: str, deployment: str) -> None:
        self.push = ctx.socket(zmq.PUSH)
        self.push.connect(endpoint)
        self.pull = ctx.socket(zmq.PULL)
        self.reply = f"tcp://127.0.0.1:{self.pull.bind_to_random_port('tcp://127.0.0.1')}"
        self.deployment = deployment

    def frames(self, x: np.ndarray, i: int) -> list:
        h = F.Header("data", self.deployment, 0, str(i), "fwd", self.reply,
                     (F.meta_for("x", x),))
        return F.encode(h, [x])

    def round_trips(self, x: np.ndarray, n: int) -> list[float]:
        times = []
        for i in range(n):
            fr = self.frames(x, i)
            t = time.perf_counter()
            self.push.send_multipart(fr, copy=False)
            self.pull.recv_multipart(copy=False)
            times.append(time.perf_counter() - t)
        return times

    def stream(self, x: np.ndarray, n: int) -> float:
        """Seconds per message with up to 8 in flight."""
        t = time.perf_counter()
        sent = got = 0
        while got < n:
            while sent < n and sent - got < 8:
                self.push.send_multipart(self.frames(x, sent), copy=False)
                sent += 1
            self.pull.recv_multipart(copy=False)
            got += 1
        return (time.perf_counter() - t) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("-o", default=str(REPO / "bench_results" / "node_hop.json"))
    args = ap.parse_args()
    reps = {"1KB": 3000, "1MB": 400, "10MB": 100}
    if args.quick:
        reps = {k: max(2 * ROUNDS, v // 10) for k, v in reps.items()}
    tmp = Path(tempfile.mkdtemp(prefix="bench-hop-"))
    broker, url = start_broker(tmp)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agent = subprocess.Popen([sys.executable, "-m", "node.cli", "--name", "bench",
                              "--broker", url, "--board", "laptop", "--host", "127.0.0.1",
                              "--data-port", "0", "--state-dir", str(tmp / "state"),
                              "--log-level", "WARNING"], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL)
    relay_ep = f"tcp://127.0.0.1:{free_port()}"
    relay = subprocess.Popen([sys.executable, "-c", RELAY, relay_ep])
    cmd = Commander(url)
    ctx = zmq.Context()
    try:
        res = cmd.wait_online("bench", 30)
        time.sleep(1.0)  # idle: after start-up, no models loaded
        idle_rss = psutil.Process(agent.pid).memory_info().rss
        for name, shape in SIZES.items():
            stage = M.StageSpec("fwd", None, (M.InputSpec("x", "float32", shape),),
                                (M.Route("x", "client"),))
            r = cmd.command("bench", M.Deploy(cid(), "", name, 0, (stage,)))
            assert r["ok"], r
        rows = {}
        for name, shape in SIZES.items():
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            hops = {"agent": Hop(ctx, res["data_endpoint"], name), "raw": Hop(ctx, relay_ep, name)}
            for h in hops.values():
                h.round_trips(x, max(5, reps[name] // 10))  # warm-up, connections
            row = {"bytes": x.nbytes}
            rtt: dict[str, list[float]] = {k: [] for k in hops}
            strm: dict[str, list[float]] = {k: [] for k in hops}
            for _ in range(ROUNDS):  # interleaved, so drift on a busy machine hits both
                for label, h in hops.items():
                    rtt[label] += h.round_trips(x, reps[name] // ROUNDS)
                    strm[label].append(h.stream(x, reps[name] // ROUNDS))
            for label in hops:
                row[f"{label}_rtt_median_s"] = statistics.median(rtt[label])
                row[f"{label}_stream_s"] = statistics.median(strm[label])
            row["ratio_rtt"] = row["agent_rtt_median_s"] / row["raw_rtt_median_s"]
            row["ratio_stream"] = row["agent_stream_s"] / row["raw_stream_s"]
            row["overhead_s"] = row["agent_rtt_median_s"] - row["raw_rtt_median_s"]
            rows[name] = row
        out = {"tensors": rows, "idle_rss_bytes": idle_rss,
               "per_hop_overhead_1KB_s": rows["1KB"]["overhead_s"],
               "targets": {"ratio_1MB_10MB": 1.15, "overhead_1KB_s": 150e-6,
                           "idle_rss_bytes": 60 << 20},
               "runtime": res["runtime"], "python": sys.version.split()[0],
               "zmq": zmq.zmq_version(), "cpus": os.cpu_count(), "quick": args.quick}
        print(f"{'tensor':>6} {'agent rtt':>11} {'raw rtt':>11} {'ratio':>6} "
              f"{'agent strm':>11} {'raw strm':>11} {'ratio':>6}")
        for name, r in rows.items():
            print(f"{name:>6} {r['agent_rtt_median_s'] * 1e3:9.3f}ms {r['raw_rtt_median_s'] * 1e3:9.3f}ms "
                  f"{r['ratio_rtt']:6.2f} {r['agent_stream_s'] * 1e3:9.3f}ms "
                  f"{r['raw_stream_s'] * 1e3:9.3f}ms {r['ratio_stream']:6.2f}")
        print(f"per-hop overhead, 1 KB tensor: {rows['1KB']['overhead_s'] * 1e6:.0f} us "
              "(target < 150 us)")
        print(f"agent idle RSS: {idle_rss / 2**20:.1f} MiB (target < 60 MiB)")
        Path(args.o).parent.mkdir(parents=True, exist_ok=True)
        Path(args.o).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.o}")
    finally:
        cmd.close()
        ctx.destroy(linger=0)
        for p in (agent, relay, broker):
            p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
