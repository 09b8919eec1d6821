"""Discrete-event simulation of a plan: latency, pipelined throughput, bytes, busy time, memory.

Resources are devices, directed links and shared hosts; devices and links serve one
thing at a time in frame order (a node runs frames in arrival order, a socket sends
messages in order). Between two devices of one host (no wire: the transfer is the
sender's and the receiver's data-plane threads at work, which is what profiling
measures as its latency, through forward-stage round trips) a device also sends one
message at a time and receives one at a time: its data plane is one thread (the
client's sending thread and its result thread; an agent's receiving thread). So a
scatter to several tiles on one host leaves one message after the other, and a gather
of their outputs is decoded one after the other. Across hosts a link's latency is taken
as the wire's, and messages to different devices overlap as before. A host is a pool of `host_cores` cores: work on a device also
occupies one core of its host for its duration, in the earliest gap that fits, so three
agents on two cores never compute three things at once; so does a transfer between two
devices of one host, which has no wire (its time is sockets and copies on those cores). Work is a stage's compute plus
its overhead (fixed per frame, per extra gathered or sliced piece, per byte stitched or
sliced), and the source's per-frame work (the client submitting, slicing tile inputs)
and the sink's gathering of result pieces. Frames are walked stage by stage in op
order, a topological order of the stage DAG because routes only go forward. Latency is
one frame alone; throughput comes from N frames queued at the source, measured after a
warm-up, and is reported with the analytic bound 1 / (busiest resource's seconds per
frame, a host's being its devices' total over its cores) that it converges to on pipelines.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from planner.planning.costmodel import CostModel, TileTask
from planner.planning.plan import SINK, SOURCE, Plan, Stage


@dataclass
class Event:
    """One busy interval of a resource, for timelines."""

    frame: int
    resource: str  # device name or "a->b"
    kind: str  # "compute" or "send"
    stage: int | str
    start: float
    end: float
    nbytes: int = 0


@dataclass
class _Run:
    dev_free: dict[str, float] = field(default_factory=dict)
    link_free: dict[tuple[str, str], float] = field(default_factory=dict)
    port_free: dict[str, float] = field(default_factory=dict)  # "out:dev" / "in:dev"
    events: list[Event] = field(default_factory=list)
    hosts: dict[str, tuple[str, int]] = field(default_factory=dict)  # device -> oversubscribed (host, cores)
    cores: dict[str, list[list[tuple[float, float]]]] = field(default_factory=dict)  # host -> per-core busy


def _gap(busy: list[tuple[float, float]], t: float, dur: float) -> float:
    """Earliest start >= t of a free interval of length dur between sorted busy intervals."""
    for s, e in busy[max(bisect.bisect_left(busy, (t, t)) - 1, 0):]:
        if e <= t:
            continue
        if s >= t + dur:
            break
        t = e
    return t


def _core(run: _Run, host: tuple[str, int], ready: float, dur: float) -> float:
    """Book dur seconds on the host core free earliest after ready; returns the start.

    Of the cores free that early, the one busy until closest before the start: frames are
    booked one after another, so a short task of one frame put at the far end of an idle
    gap would split the gap that the next frame's longer task needs (a core left idle
    while work waits, which a host's scheduler does not do).
    """
    name, cores = host
    pool = run.cores.setdefault(name, [[] for _ in range(cores)])

    def fit(c: int) -> tuple[float, float]:
        start = _gap(pool[c], ready, dur)
        i = bisect.bisect_right(pool[c], (start, float("inf")))
        return start, -(pool[c][i - 1][1] if i else float("-inf"))

    best = min(range(cores), key=fit)
    start = _gap(pool[best], ready, dur)
    bisect.insort(pool[best], (start, start + dur))
    return start


def _work(run: _Run, frame: int, device: str, tag, ready: float, dur: float,
          fifo: bool = True) -> float:
    """Run dur seconds on device (in frame order) and one core of its host; returns the end."""
    if not fifo and dur <= 0:
        return ready  # the source's or sink's work when no overhead is modelled
    start = max(ready, run.dev_free.get(device, 0.0))
    shared = run.hosts.get(device)
    if shared is not None and dur > 0:
        start = _core(run, shared, start, dur)
    run.dev_free[device] = start + dur
    if dur > 0 or fifo:
        run.events.append(Event(frame, device, "compute", tag, start, start + dur))
    return start + dur


def _tasks(plan: Plan, cm: CostModel) -> dict[int, list[TileTask]]:
    """Per stage: (device, seconds, in bytes, out bytes) of each tile, or the one task."""
    out = {}
    for s in plan.stages:
        a, b = s.ops
        if s.tiles:
            out[s.id] = cm.tile_tasks(a, b, s.tiles.rows, s.tiles.cols, s.tiles.devices)
        else:
            out[s.id] = [TileTask(s.device, cm.range_seconds(s.device, a, b), 0, 0)]
    return out


def _send(run: _Run, cm: CostModel, frame: int, tag, src: str, dst: str, nbytes: float, ready: float) -> float:
    """Queue one message on link src->dst; returns its arrival time."""
    dur = cm.transfer(src, dst, nbytes)
    if dur == 0.0:
        return ready
    key = (src, dst)
    start = max(ready, run.link_free.get(key, 0.0))
    ports = (f"out:{src}", f"in:{dst}") if _same_host(cm, src, dst) else ()
    for p in ports:
        start = max(start, run.port_free.get(p, 0.0))
    host = run.hosts.get(src)
    if host is not None and host == run.hosts.get(dst):
        start = _core(run, host, start, dur)  # no wire within a host: sockets and copies are CPU work
    run.link_free[key] = start + dur
    for p in ports:
        run.port_free[p] = start + dur
    run.events.append(Event(frame, f"{src}->{dst}", "send", tag, start, start + dur, int(nbytes)))
    return start + dur


def _same_host(cm: CostModel, a: str, b: str) -> bool:
    devs = cm.profile.devices
    return bool(devs[a].host) and devs[a].host == devs[b].host


def _frame(plan: Plan, cm: CostModel, tasks, run: _Run, frame: int, release: float) -> float:
    """Push one frame through the plan; returns when its last output reaches the sink."""
    by_dst: dict = {}
    for r in plan.routes:
        by_dst.setdefault(r.dst, []).append(r)
    sliced = _sliced(plan, tasks)
    extra, nbytes = sliced.get((SOURCE, 0), (0, 0.0))
    ready = _work(run, frame, plan.source, SOURCE, release, cm.overhead(plan.source, extra, nbytes), fifo=False)
    done: dict = {SOURCE: [(plan.source, ready, None)]}  # endpoint -> [(device, ready, tile)]
    order = sorted(plan.stages, key=lambda s: s.ops[0])
    for s in order:
        ts = tasks[s.id]
        arrive = [ready if s.ops[0] == 0 else 0.0] * len(ts)
        extra, stitch = [0] * len(ts), [0.0] * len(ts)
        for r in by_dst.get(s.id, []):
            for k, t in enumerate(ts):
                for dev, at, src_tile in done[r.src]:
                    nb = _bytes(r.bytes, src_tile, t, s)
                    arrive[k] = max(arrive[k], _send(run, cm, frame, r.src, dev, t.device, nb, at))
                    if len(done[r.src]) > 1:  # region pieces of one tensor: gathered and stitched
                        stitch[k] += nb
                extra[k] += len(done[r.src]) - 1
        outs = []
        for k, t in enumerate(ts):
            n, nb = sliced.get((s.id, k), (0, 0.0))
            dur = t.seconds + cm.overhead(t.device, extra[k] + n, stitch[k] + nb)
            outs.append((t.device, _work(run, frame, t.device, s.id, arrive[k], dur), t if s.tiles else None))
        done[s.id] = outs
    finish, extra, stitch = release, 0, 0.0
    for r in by_dst.get(SINK, []):
        for dev, at, src_tile in done[r.src]:
            nb = src_tile.out_bytes if src_tile else r.bytes
            finish = max(finish, _send(run, cm, frame, r.src, dev, plan.sink, nb, at))
            stitch += nb if len(done[r.src]) > 1 else 0.0
        extra += len(done[r.src]) - 1
    gather = cm.overhead(plan.sink, extra, stitch, fixed=False)
    return _work(run, frame, plan.sink, SINK, finish, gather, fifo=False)


def _sliced(plan: Plan, tasks) -> dict:
    """(endpoint, task) -> (regions it slices out for tile stages beyond the first, their bytes)."""
    tiled = {s.id for s in plan.stages if s.tiles}
    out: dict = {}
    for r in plan.routes:
        if r.dst not in tiled:
            continue
        for k in [0] if r.src == SOURCE else range(len(tasks[r.src])):
            n, nb = out.get((r.src, k), (0, 0.0))
            out[(r.src, k)] = (n + len(tasks[r.dst]) - 1, nb + sum(t.in_bytes for t in tasks[r.dst]))
    return out


def _bytes(route_bytes: int, src_tile: TileTask | None, dst_tile: TileTask, dst: Stage) -> float:
    """Bytes of one message: a tile's share when scattering to or gathering from tiles."""
    if dst.tiles:
        return dst_tile.in_bytes
    if src_tile is not None:
        return src_tile.out_bytes
    return route_bytes


def run_frames(plan: Plan, cm: CostModel, frames: int, gap: float = 0.0) -> tuple[list[float], _Run]:
    """Completion time of each of `frames` frames released every `gap` seconds."""
    tasks = _tasks(plan, cm)
    run = _Run(hosts=cm.shared_hosts())
    finish = [_frame(plan, cm, tasks, run, f, f * gap) for f in range(frames)]
    return finish, run


def simulate(plan: Plan, cm: CostModel, frames: int = 32) -> dict:
    """The `simulate --json` document (docs/cli.md), plus links and the bottleneck."""
    (latency,), one = run_frames(plan, cm, 1)
    busy: dict[str, float] = {}
    links: dict[str, dict] = {}
    for e in one.events:
        busy[e.resource] = busy.get(e.resource, 0.0) + (e.end - e.start)
    for e in one.events:
        if e.kind == "send":
            a, b = e.resource.split("->", 1)
            rec = links.setdefault(e.resource, {"from": a, "to": b, "bytes": 0, "busy_s": 0.0})
            rec["bytes"] += e.nbytes
            rec["busy_s"] += e.end - e.start
    sends = [(*e.resource.split("->", 1), e.end - e.start) for e in one.events if e.kind == "send"]
    cores = {h: c for h, c in cm.shared_hosts().values()}
    hosts = {}
    for host, secs in cm.host_bound(busy, sends).items():  # a shared host is a resource too
        busy[f"host:{host}"] = secs
        hosts[host] = {"cores": cores[host], "work_s": secs * cores[host]}
    bottleneck = max(busy, key=busy.get) if busy else None
    bound = 1.0 / busy[bottleneck] if bottleneck and busy[bottleneck] > 0 else float("inf")
    frames = max(frames, 2)
    finish, _ = run_frames(plan, cm, frames)
    warm = frames // 4
    span = finish[-1] - finish[warm]
    # A window of a finite stream can beat the bound (frames in it were partly done before
    # it opened, cores filled gaps early); no stream does in the long run.
    measured = min((frames - 1 - warm) / span, bound) if span > 0 else bound
    devices = {}
    mem = plan_memory(plan, cm)
    for name in plan.devices():
        devices[name] = {"busy_s": busy.get(name, 0.0), "memory_bytes": mem.get(name, 0),
                         "memory_budget_bytes": cm.profile.devices[name].memory_bytes}
    return {"latency_s": latency, "throughput_fps": measured, "throughput_bound_fps": bound,
            "bytes_per_frame": sum(rec["bytes"] for rec in links.values()), "devices": devices,
            "links": list(links.values()), "hosts": hosts, "bottleneck": bottleneck,
            "frames": frames}


def plan_memory(plan: Plan, cm: CostModel) -> dict[str, int]:
    """Peak memory per device: every part it holds (weights + activations + overhead)."""
    mem: dict[str, int] = {}
    for s in plan.stages:
        a, b = s.ops
        if s.tiles:
            n = len(s.tiles.devices)
            for d in s.tiles.devices:
                mem[d] = mem.get(d, 0) + cm.tile_memory(a, b, 1.0 / n, d)
        else:
            mem[s.device] = mem.get(s.device, 0) + cm.memory(s.device, a, b)
    return mem


def timeline(plan: Plan, cm: CostModel, frames: int = 3) -> list[Event]:
    """Busy intervals of every resource for a few pipelined frames (for explain --png)."""
    _, run = run_frames(plan, cm, frames)
    return run.events
