"""Board speed on this machine: the reference workload timed here against the board file.

Each board file (node/boards/<kind>.toml) gives `reference_ms`, the board's published
time for one inference of its reference workload on `reference_threads` threads, and
cites the source. The same workload (a MobileNetV2-like int8 model from
planner/modelbuild at 224 px) is timed here on one thread: `host_ms`, the best of a few
sustained runs (the least disturbed by other load). A board core then runs at
share = host_ms * reference_threads / reference_ms of a host core, and a board of N
cores gets N x share of CPU quota, capped at the host's cores (the testbed says when),
and as many interpreter threads as that quota has whole cores, at most N (`emulate`). The
measurement is machine-specific: it is cached in the state
directory, keyed by CPU model, runtime and version.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from node import config
from node.runtime import RuntimeSettings, runtime_name, runtime_version
from planner.testbed.spec import TestbedError

REFERENCE = {"recipe": "mobilenet_v2_like", "input_size": 224, "dtype": "int8", "threads": 1}
CACHE_VERSION = 1
CACHE_MAX_AGE_S = 7 * 86400
MIN_QUOTA_S = 0.001  # CFS refuses a quota below 1 ms
# a throttled group waits for a scheduler tick (4 ms at HZ=250) when another task holds
# its CPU at the period's start: with 4 ms periods a 1-thread Pi 4 (0.327 cores) got 82%
# of its quota on a loaded machine; a period of 3 ticks leaves time to spend it
MIN_PERIOD_S = 0.012


@dataclass(frozen=True)
class BoardEmulation:
    """How one board kind is emulated here."""

    kind: str
    cores: int  # the board's cores
    threads: int  # its interpreter threads: as many as its quota has cores (see below)
    share: float  # of one host core, per board core
    cpus: float  # quota in host cores (cores x share, capped at the host's cores)
    period_s: float  # CFS period: the quota is at least MIN_QUOTA_S
    capped: bool  # the board is faster than this machine can emulate
    reference_ms: float
    reference_source: str

    def to_json(self) -> dict:
        return asdict(self)


def host_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor()}|{runtime_name()}-{runtime_version()}"


def measure_host_ms(rounds: int = 5, round_s: float = 0.4) -> float:
    """ms per inference of the reference workload on one thread here (best sustained round)."""
    import numpy as np

    from node.profiler import random_input
    from node.runtime import make_interpreter
    from planner.modelbuild import recipes

    model = recipes.mobilenet_v2_like(input_size=REFERENCE["input_size"],
                                      dtype=REFERENCE["dtype"], seed=0)
    interp = make_interpreter(model, RuntimeSettings(threads=1))
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], random_input(tuple(d["shape"]), d["dtype"], rng))
    interp.invoke()
    best = float("inf")
    for _ in range(rounds):
        n, t = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t < round_s:
            interp.invoke()
            n += 1
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e3


def host_ms(state_dir: Path, fresh: bool = False) -> float:
    """The cached host figure (measured now if missing, stale or from another machine)."""
    path = state_dir / "calibration.json"
    key = _machine()
    if not fresh:
        try:
            doc = json.loads(path.read_text())
            if (doc.get("version") == CACHE_VERSION and doc.get("machine") == key
                    and time.time() - doc.get("measured_at", 0) < CACHE_MAX_AGE_S):
                return float(doc["host_ms"])
        except (OSError, ValueError, KeyError):
            pass
    ms = measure_host_ms()
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": CACHE_VERSION, "machine": key, "host_ms": ms,
                                "reference": REFERENCE, "measured_at": time.time()}))
    return ms


def emulate(kind: str, host_ms_: float, cores_here: int | None = None) -> BoardEmulation:
    """Quota, threads and CFS period that make `kind` run at its published speed here."""
    board = config.for_board(kind).board
    if board.reference_ms <= 0:
        raise TestbedError(f"board file {kind}.toml has no reference_ms (published speed) "
                           "to calibrate against")
    cores_here = cores_here or host_cores()
    share = host_ms_ * board.reference_threads / board.reference_ms
    want = board.cores * share
    cpus = min(want, float(cores_here))
    capped = want > cores_here or share > 1.0
    if share > 1.0:  # a board core faster than a host core: each thread gets a whole one
        cpus = min(float(board.cores), float(cores_here))
    # threads beyond the quota's cores only spin: the quota pools the board's cores, so a
    # Pi 3 (0.115 cores here) got nothing from 2 threads but 9% more CPU per inference,
    # and 4 threads on 2 host cores made timings erratic (x0.92..x1.56 run to run)
    threads = max(1, min(board.cores, cores_here, math.ceil(cpus - 1e-9)))
    # the quota per period must be >= 1 ms: period = 1 ms / quota, at least MIN_PERIOD_S
    period = max(MIN_QUOTA_S / cpus, MIN_PERIOD_S)
    return BoardEmulation(kind, board.cores, threads, round(min(share, 1.0), 5), round(cpus, 5),
                          round(period, 4), capped, board.reference_ms, board.reference_source)
