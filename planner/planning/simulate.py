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
as the wire's, and messages to different devices overlap as before. A host is a pool of
`host_cores` cores: work on a device also
occupies one core of its host for its duration, so three agents on two cores never
compute three things at once; so does a transfer between two devices of one host, which
has no wire (its time is sockets and copies on those cores). Tasks are queued frame by
frame and then started in time order (`_schedule`): a task starts when its inputs and
resources are free, and a freed core goes to the waiting task of the earliest frame, so a
core never idles while work waits for one (as a host's scheduler does; cores are not
preempted). Work is a stage's compute plus
its overhead (fixed per frame, per extra gathered or sliced piece, per byte stitched or
sliced), and the source's per-frame work (the client submitting, slicing tile inputs)
and the sink's gathering of result pieces. Frames are walked stage by stage in op
order, a topological order of the stage DAG because routes only go forward. Latency is
one frame alone; throughput comes from N frames queued at the source, measured after a
warm-up (never above the bound), and is reported with the analytic bound 1 / (busiest
resource's seconds per frame, a host's being its devices' total over its cores). On
pipelines whose devices each have a host of their own it converges to the bound; where
devices share a host, tasks that do not split across cores and a device's one-at-a-time
sends to others on its host (not in the bound) can keep it below.
"""

from __future__ import annotations

import heapq
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


When = tuple[float, tuple[int, ...]]  # not before this time, nor before these tasks end


@dataclass
class _Task:
    frame: int
    resource: str
    kind: str
    tag: int | str
    dur: float
    nbytes: int
    after: float
    deps: tuple[int, ...]  # the data it waits for and the task before it on each of its resources
    host: tuple[str, int] | None  # takes a core of this host while it runs
    record: bool
    start: float = 0.0


@dataclass
class _Run:
    hosts: dict[str, tuple[str, int]]  # device -> oversubscribed (host, cores)
    tasks: list[_Task] = field(default_factory=list)
    # resource -> its last task (served in order)
    last: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def add(self, when: When, resources: tuple[str, ...], **task) -> When:
        """Queue a task behind `when` and behind the last task of each resource."""
        deps = when[1] + tuple(self.last[r] for r in resources if r in self.last)
        i = len(self.tasks)
        self.tasks.append(_Task(after=when[0], deps=deps, **task))
        for r in resources:
            self.last[r] = i
        return when[0], (i,)

    def end(self, when: When) -> float:
        return max([when[0], *(self.tasks[i].start + self.tasks[i].dur for i in when[1])])


def _join(a: When, b: When) -> When:
    return max(a[0], b[0]), a[1] + b[1]


def _schedule(run: _Run) -> None:
    """Start every task as soon as its inputs and resources are free and, on a shared host,
    a core is: when a core frees, the waiting task of the earliest frame takes it (ties in
    booking order). Walked in time order, so a core never idles while work waits for one."""
    tasks = run.tasks
    children: list[list[int]] = [[] for _ in tasks]
    waiting = [0] * len(tasks)
    for i, t in enumerate(tasks):
        for d in set(t.deps):
            children[d].append(i)
            waiting[i] += 1
    pending = [(t.after, i) for i, t in enumerate(tasks) if not waiting[i]]  # (ready at, task)
    heapq.heapify(pending)
    queued: dict[str, list[tuple[int, int]]] = {}  # host -> (frame, task) ready for a core
    free: dict[str, list[float]] = {}  # host -> when each core frees
    now = 0.0

    def start(i: int, at: float) -> None:
        tasks[i].start = at
        for j in children[i]:
            waiting[j] -= 1
            if not waiting[j]:
                heapq.heappush(pending, (run.end((tasks[j].after, tasks[j].deps)), j))

    while pending or any(queued.values()):
        core_at, host = min(((max(now, min(free[h])), h) for h, q in queued.items() if q),
                            default=(float("inf"), ""))
        if pending and pending[0][0] <= core_at:
            now, i = heapq.heappop(pending)
            t = tasks[i]
            if t.host is None:
                start(i, now)
            else:
                free.setdefault(t.host[0], [0.0] * t.host[1])
                heapq.heappush(queued.setdefault(t.host[0], []), (t.frame, i))
            continue
        now = core_at
        _, i = heapq.heappop(queued[host])
        cores = free[host]
        c = cores.index(min(cores))
        cores[c] = now + tasks[i].dur
        start(i, now)
    run.events = [Event(t.frame, t.resource, t.kind, t.tag, t.start, t.start + t.dur, t.nbytes)
                  for t in tasks if t.record]


def _work(run: _Run, frame: int, device: str, tag, ready: When, dur: float,
          fifo: bool = True) -> When:
    """Run dur seconds on device (in frame order) and one core of its host."""
    if not fifo and dur <= 0:
        return ready  # the source's or sink's work when no overhead is modelled
    host = run.hosts.get(device) if dur > 0 else None
    return run.add(ready, (device,), frame=frame, resource=device, kind="compute", tag=tag, dur=dur,
                   nbytes=0, host=host, record=True)


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


def _send(
    run: _Run, cm: CostModel, frame: int, tag, src: str, dst: str, nbytes: float, ready: When
) -> When:
    """Queue one message on link src->dst (and, within a host, the ends' one-at-a-time ports)."""
    dur = cm.transfer(src, dst, nbytes)
    if dur == 0.0:
        return ready
    ports = (f"out:{src}", f"in:{dst}") if _same_host(cm, src, dst) else ()
    host = run.hosts.get(src)
    host = host if host is not None and host == run.hosts.get(dst) else None  # no wire: CPU work
    return run.add(
        ready,
        (f"{src}->{dst}", *ports),
        frame=frame,
        resource=f"{src}->{dst}",
        kind="send",
        tag=tag,
        dur=dur,
        nbytes=int(nbytes),
        host=host,
        record=True,
    )


def _same_host(cm: CostModel, a: str, b: str) -> bool:
    devs = cm.profile.devices
    return bool(devs[a].host) and devs[a].host == devs[b].host


def _frame(plan: Plan, cm: CostModel, tasks, run: _Run, frame: int, release: float) -> When:
    """Queue one frame's tasks through the plan; returns when its last output reaches the sink."""
    by_dst: dict = {}
    for r in plan.routes:
        by_dst.setdefault(r.dst, []).append(r)
    sliced = _sliced(plan, tasks)
    extra, nbytes = sliced.get((SOURCE, 0), (0, 0.0))
    ready = _work(
        run,
        frame,
        plan.source,
        SOURCE,
        (release, ()),
        cm.overhead(plan.source, extra, nbytes),
        fifo=False,
    )
    done: dict = {SOURCE: [(plan.source, ready, None)]}  # endpoint -> [(device, ready, tile)]
    order = sorted(plan.stages, key=lambda s: s.ops[0])
    for s in order:
        ts = tasks[s.id]
        arrive: list[When] = [ready if s.ops[0] == 0 else (0.0, ())] * len(ts)
        extra, stitch = [0] * len(ts), [0.0] * len(ts)
        for r in by_dst.get(s.id, []):
            for k, t in enumerate(ts):
                for dev, at, src_tile in done[r.src]:
                    nb = _bytes(r.bytes, src_tile, t, s)
                    arrive[k] = _join(
                        arrive[k], _send(run, cm, frame, r.src, dev, t.device, nb, at)
                    )
                    if len(done[r.src]) > 1:  # region pieces of one tensor: gathered and stitched
                        stitch[k] += nb
                extra[k] += len(done[r.src]) - 1
        outs = []
        for k, t in enumerate(ts):
            n, nb = sliced.get((s.id, k), (0, 0.0))
            dur = t.seconds + cm.overhead(t.device, extra[k] + n, stitch[k] + nb)
            outs.append(
                (
                    t.device,
                    _work(run, frame, t.device, s.id, arrive[k], dur),
                    t if s.tiles else None,
                )
            )
        done[s.id] = outs
    finish: When = (release, ())
    extra, stitch = 0, 0.0
    for r in by_dst.get(SINK, []):
        for dev, at, src_tile in done[r.src]:
            nb = src_tile.out_bytes if src_tile else r.bytes
            finish = _join(finish, _send(run, cm, frame, r.src, dev, plan.sink, nb, at))
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
            out[(r.src, k)] = (
                n + len(tasks[r.dst]) - 1,
                nb + sum(t.in_bytes for t in tasks[r.dst]),
            )
    return out


def _bytes(route_bytes: int, src_tile: TileTask | None, dst_tile: TileTask, dst: Stage) -> float:
    """Bytes of one message: a tile's share when scattering to or gathering from tiles."""
    if dst.tiles:
        return dst_tile.in_bytes
    if src_tile is not None:
        return src_tile.out_bytes
    return route_bytes


def run_frames(
    plan: Plan, cm: CostModel, frames: int, gap: float = 0.0
) -> tuple[list[float], _Run]:
    """Completion time of each of `frames` frames released every `gap` seconds."""
    tasks = _tasks(plan, cm)
    run = _Run(hosts=cm.shared_hosts())
    finish = [_frame(plan, cm, tasks, run, f, f * gap) for f in range(frames)]
    _schedule(run)
    return [run.end(w) for w in finish], run


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
