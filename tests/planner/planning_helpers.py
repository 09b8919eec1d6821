"""Random profiles and exhaustive search under the planner's cost model, for optimality tests."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

from planner.planning.costmodel import CostModel
from planner.planning.profile import Device, Link, Profile
from planner.planning.strategies.latency import chain_latency
from planner.planning.strategies.throughput import chain_period


def random_profile(seed: int, n_devices: int, memory: tuple[int, int] = (1 << 40, 1 << 40),
                   client: bool = True) -> Profile:
    """Heterogeneous speeds, memory budgets and links; a non-computing client as source/sink."""
    rng = random.Random(seed)
    devices = {}
    for i in range(n_devices):
        devices[f"d{i}"] = Device(
            f"d{i}",
            speed=rng.choice([1e6, 3e6, 1e7, 5e7]) * rng.uniform(0.5, 2),
            bytes_per_s=rng.uniform(1e7, 1e9),
            op_overhead_s=rng.uniform(0, 1e-3),
            memory_bytes=rng.randint(*memory),
            overhead_bytes=rng.randint(0, 2000),
        )
    names = list(devices)
    if client:
        devices["client"] = Device("client", compute=False)
    links = {}
    everyone = list(devices)
    for a, b in itertools.permutations(everyone, 2):
        if rng.random() < 0.6:
            links[(a, b)] = Link(
                rng.choice([1e5, 1e6, 1e7]) * rng.uniform(0.5, 2), rng.uniform(0, 5e-3)
            )
    src = "client" if client else rng.choice(names)
    sink = "client" if client else rng.choice(names)
    return Profile(devices, links, Link(2e6, 1e-3), src, sink)


def with_overheads(prof: Profile, seed: int, host: str = "", cores: int = 0, twins: bool = False,
                   client_on_host: bool = False, off_host: int = 0) -> Profile:
    """Random stage overheads (the client's too); optionally the devices on one host with
    `cores` cores (the client too with client_on_host, the last `off_host` devices on their
    own), or all devices alike (twins)."""
    rng = random.Random(seed)
    d0 = prof.devices["d0"]
    ovh = rng.choice([0.0, 1e-4, 1e-3]) * rng.random()
    names = [n for n in prof.devices if n != "client"]
    away = set(names[len(names) - off_host:]) if off_host else set()
    devs = {}
    for n, d in prof.devices.items():
        if n == "client":
            on = host if client_on_host else ""
            devs[n] = replace(
                d, stage_overhead_s=rng.choice([0.0, 5e-4]), host=on, host_cores=cores if on else 0
            )
            continue
        base = replace(d0, name=n) if twins else d
        on = "" if n in away else host
        devs[n] = replace(base, stage_overhead_s=ovh if twins else rng.uniform(0, 2e-3), host=on,
                          host_cores=cores if on else 0)
    return replace(prof, devices=devs)


def chains(cm: CostModel, names: list[str], max_nodes: int | None = None, ok=None):
    """Every (cuts, devices) chain on distinct devices whose ranges fit memory and pins."""
    n = cm.n
    for m in range(1, min(len(names), max_nodes or len(names), n) + 1):
        for inner in itertools.combinations(range(1, n), m - 1):
            cuts = [0, *inner, n]
            for devs in itertools.permutations(names, m):
                good = True
                for a, b, d in zip(cuts, cuts[1:], devs, strict=False):
                    if not cm.fits(d, a, b) or (ok is not None and not ok(d, a, b)):
                        good = False
                        break
                if good:
                    yield cuts, list(devs)


def best_latency(cm: CostModel, names: list[str], **kw) -> float:
    """Exhaustive minimum of chain_latency."""
    return min((chain_latency(cm, c, d) for c, d in chains(cm, names, **kw)), default=math.inf)


def best_period(cm: CostModel, names: list[str], **kw) -> float:
    """Exhaustive minimum of chain_period."""
    return min((chain_period(cm, c, d) for c, d in chains(cm, names, **kw)), default=math.inf)
