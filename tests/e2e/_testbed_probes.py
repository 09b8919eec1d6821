"""Measurements the testbed tests run inside a board's namespace (and cgroup), as processes.

    python -m tests.e2e._testbed_probes sustained GROUP MODEL THREADS SECONDS
    python -m tests.e2e._testbed_probes profile GROUP THREADS WHOLE PART...
    python -m tests.e2e._testbed_probes echo HOST PORT          (UDP echo, until killed)
    python -m tests.e2e._testbed_probes sink HOST PORT          (TCP sink, one connection)

A probe loads its model before it joins GROUP (a board's cgroup: python start-up at a
tenth of a core would take seconds), then prints one line of JSON.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path


def _enter(group: str) -> None:
    if group != "-":
        Path(group, "cgroup.procs").write_text(str(os.getpid()))


def _interp(path: str, threads: int):
    import numpy as np

    from node.profiler import random_input
    from node.runtime import RuntimeSettings, make_interpreter

    it = make_interpreter(Path(path).read_bytes(), RuntimeSettings(threads=threads))
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        it.set_tensor(d["index"], random_input(tuple(d["shape"]), d["dtype"], rng))
    it.invoke()
    return it


def _sustain(invoke, seconds: float) -> tuple[float, float]:
    """(wall s, process CPU s) per call of invoke, run back to back for `seconds`."""
    invoke()
    n, t, c = 0, time.perf_counter(), time.process_time()
    while n == 0 or time.perf_counter() - t < seconds:
        invoke()
        n += 1
    return (time.perf_counter() - t) / n, (time.process_time() - c) / n


def sustained(group: str, model: str, threads: str, seconds: str) -> dict:
    """Sustained ms per inference and the CPU share it got, inside the group."""
    it = _interp(model, int(threads))
    _enter(group)
    _sustain(it.invoke, 0.3)  # spend what quota the group banked while idle
    wall, cpu = _sustain(it.invoke, float(seconds))
    return {"ms": wall * 1e3, "cpu_ms": cpu * 1e3, "share": cpu / wall}


def profile(group: str, threads: str, whole: str, *parts: str) -> dict:
    """Per-part profile times (the profiler's batches, and single invokes as before), the
    sustained time of the whole model and of its parts run as a chain, inside the group."""
    from node import pacing
    from node.profiler import summarize, time_part
    from node.runtime import RuntimeSettings

    datas = [Path(p).read_bytes() for p in parts]
    its = [_interp(p, int(threads)) for p in parts]
    one = _interp(whole, int(threads))
    _enter(group)
    rs = RuntimeSettings(threads=int(threads))
    out: dict = {"quota": pacing.cpu_quota()}
    real_quota = pacing.cpu_quota
    for label, quota in (("batched", real_quota), ("single", lambda: None)):
        pacing.cpu_quota = quota  # "single": as profiled before, blind to the quota
        ms = []
        for data in datas:
            time.sleep(0.1)  # a profile command arrives after idle time, quota banked
            ms.append(summarize(time_part(data, rs, 5, 1)) * 1e3)
        out[label] = ms
    pacing.cpu_quota = real_quota

    def chain() -> None:
        for it in its:
            it.invoke()

    wall, cpu = _sustain(one.invoke, 2.0)
    out["sustained_whole_ms"], out["sustained_whole_cpu_ms"] = wall * 1e3, cpu * 1e3
    out["sustained_chain_ms"] = _sustain(chain, 2.0)[0] * 1e3
    return out


def echo(host: str, port: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    print(json.dumps({"listening": True}), flush=True)
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)


def sink(host: str, port: str) -> dict:
    """Bytes received on one TCP connection and when (first byte, last byte)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(1)
    print(json.dumps({"listening": True}), flush=True)
    conn, _ = srv.accept()
    marks: list[tuple[float, int]] = []
    total = 0
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        total += len(data)
        marks.append((time.perf_counter(), total))
    return {"bytes": total, "marks": marks[:: max(1, len(marks) // 400)] + marks[-1:]}


def main(argv: list[str]) -> int:
    what, args = argv[0], argv[1:]
    if what in ("echo",):
        echo(*args)
        return 0
    fn = {"sustained": sustained, "profile": profile, "sink": sink}[what]
    print(json.dumps(fn(*args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
