"""Profile the online nodes for one model: measured per-op seconds, probed links, cached.

Cheap by design: the model is cut into at most `max_groups` op ranges of similar MACs
(each a valid standalone part), every range is timed on the node (`profile` command,
median of a few invokes), and a range's time is spread over its ops in proportion to
their analytic cost (MACs x op-type factor + activation bytes + a per-op overhead, from
planner/planning/profile.py). Results are cached per (board, runtime + version, threads, model
sha256), so nodes of the same kind are measured once and later deploys skip it.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from node.config import config_dir
from node.errors import WireError
from node.wire import messages as m
from node.wire.frames import CLIENT, Header, encode, meta_for
from node.wire.results import ProbeResult
from node.wire.service import ServiceClient
from planner.errors import CutError, FleetError
from planner.fleet.dataclient import local_address_towards
from planner.fleet.overheads import NODE_KEYS, client_device, measure_node
from planner.fleet.progress import OnProgress, StageProgress
from planner.model.cut import Part, cut_range
from planner.model.graph import ModelGraph
from planner.planning.profile import Device, Link, Profile, analytic_op_seconds, board_device

if TYPE_CHECKING:
    from planner.fleet.nodes import FleetAccess as Fleet
    from planner.fleet.nodes import NodeInfo

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """~/.cache/tilefleet/profiles (XDG_CACHE_HOME respected)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tilefleet" / "profiles"


def op_groups(graph: ModelGraph, max_groups: int = 24) -> list[tuple[int, int]]:
    """Consecutive op ranges of similar MACs that each cut into a valid part."""
    n = len(graph.ops)
    total = sum(op.macs for op in graph.ops) or 1
    target = total / max(1, min(max_groups, n))
    groups, start, acc = [], 0, 0
    for k, op in enumerate(graph.ops):
        acc += op.macs
        if acc >= target and k + 1 < n and _cuttable(graph, start, k + 1):
            groups.append((start, k + 1))
            start, acc = k + 1, 0
    groups.append((start, n))
    if len(groups) > 1 and not _cuttable(graph, *groups[-1]):
        groups[-2:] = [(groups[-2][0], n)]  # e.g. a tail of constant folding only
    return groups


def _cuttable(graph: ModelGraph, a: int, b: int) -> bool:
    try:
        cut_range(graph, a, b)
        return True
    except CutError:
        return False


def spread(graph: ModelGraph, groups: list[tuple[int, int]], seconds: list[float],
           prior: Device) -> list[float]:
    """Per-op seconds: each group's measured time split by the ops' analytic cost."""
    out = [0.0] * len(graph.ops)
    for (a, b), s in zip(groups, seconds, strict=True):
        w = [analytic_op_seconds(prior, graph.ops[k].type, graph.ops[k].macs,
                                 graph.ops[k].activation_bytes) for k in range(a, b)]
        tot = sum(w) or 1.0
        for k, wk in zip(range(a, b), w, strict=True):
            out[k] = s * wk / tot
    return out


def cache_key(node: NodeInfo, sha: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in
                   f"{node.board}__{node.runtime}-{node.runtime_version}__t{node.threads}")
    return f"{safe}__{sha[:16]}"


def _read_cache(path: Path, max_age_s: float) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("version") != CACHE_VERSION or time.time() - doc.get("measured_at", 0) > max_age_s:
        return None
    return doc


def prior_device(node: NodeInfo) -> Device:
    """The node's board file as a prior (tier, speed), with its announced memory budget."""
    path = config_dir() / f"{node.board}.toml"
    base = board_device(node.name, path) if path.exists() else Device(node.name, node.board)
    return replace(
        base,
        cores=max(1, node.cores),
        memory_bytes=node.memory_budget_bytes or base.memory_bytes,
        host=str(node.resources.get("host") or ""),
        host_cores=int(node.resources.get("host_cores") or 0),
    )


def measure(fleet: Fleet, node: NodeInfo, parts: list[Part], repetitions: int = 5,
            timeout_s: float = 120.0) -> list[float]:
    """Upload the parts to `node` and time each with its `profile` command."""
    with ServiceClient(node.service_endpoint, zmq.Context.instance(), 60) as svc:
        try:
            for p in parts:
                svc.upload(p.data, p.sha256)
        except WireError as exc:
            raise FleetError(f"node {node.name!r}: upload for profiling failed: {exc}") from None
    res = fleet.control.command(node.name, m.Profile, timeout_s,
                                parts=tuple(p.sha256 for p in parts), repetitions=repetitions)
    return [res.median_s[p.sha256] for p in parts]


def profile_fleet(fleet: Fleet, graph: ModelGraph, nodes: list[str] | None = None, *,
                  cache_dir: str | Path | None = None, max_age_s: float = 7 * 86400,
                  fresh: bool = False, max_groups: int = 24, probe: bool = True,
                  on_progress: OnProgress | None = None) -> Profile:
    """A Profile of the (named or all) online nodes with measured op seconds and links.

    Reports stage "profiling" (node kinds measured) to `on_progress` when the cache is cold.
    """
    online = {n.name: n for n in fleet.nodes()}
    names = nodes or sorted(online)
    for n in names:
        if n not in online:
            raise FleetError(f"unknown node {n!r} (online: {', '.join(online) or 'none'})")
    if not names:
        raise FleetError("no node is online to profile")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    keys = {n: cache_key(online[n], graph.sha256) for n in names}
    known = {} if fresh else {k: d for k in set(keys.values())
                              if (d := _read_cache(cache / f"{k}.json", max_age_s))}
    todo = {k: n for n, k in keys.items() if k not in known}  # one node per kind
    if todo:
        groups = op_groups(graph, max_groups)
        parts = [cut_range(graph, a, b) for a, b in groups]
        bar = StageProgress(on_progress, "profiling", len(todo), "node kinds",
                            f"{len(todo)} node kind(s), {len(groups)} ranges")

        def one(key: str, name: str) -> tuple[str, dict[str, Any]]:
            secs = measure(fleet, online[name], parts)
            doc = {"version": CACHE_VERSION, "node": name, "board": online[name].board,
                   "runtime": online[name].runtime,
                   "runtime_version": online[name].runtime_version,
                   "threads": online[name].threads, "model_sha256": graph.sha256,
                   "groups": [list(g) for g in groups], "group_seconds": secs,
                   "op_seconds": spread(graph, groups, secs, prior_device(online[name])),
                   "measured_at": time.time()}
            bar.add(1)
            return key, doc

        with ThreadPoolExecutor(len(todo)) as pool:
            for key, doc in [f.result() for f in [pool.submit(one, k, n) for k, n in todo.items()]]:
                known[key] = doc
                cache.mkdir(parents=True, exist_ok=True)
                (cache / f"{key}.json").write_text(json.dumps(doc))
        bar.finish()
    if probe:  # per node kind, cached with its op seconds (older cache files lack them)
        for key in {k for k in keys.values() if "overheads" not in known[k]}:
            name = next(n for n in names if keys[n] == key)
            groups = [(int(a), int(b)) for a, b in known[key]["groups"]]
            known[key]["overheads"] = measure_node(fleet, online[name], graph, groups,
                                                   known[key]["group_seconds"])
            cache.mkdir(parents=True, exist_ok=True)
            (cache / f"{key}.json").write_text(json.dumps(known[key]))
    devices: dict[str, Device] = {}
    macs = sum(op.macs for op in graph.ops)
    for n in names:
        secs = known[keys[n]]["op_seconds"]
        dev = prior_device(online[n])
        speed = macs / sum(secs) if sum(secs) > 0 and macs else dev.speed
        ovh = {
            k: float(v) for k, v in known[keys[n]].get("overheads", {}).items() if k in NODE_KEYS
        }
        devices[n] = replace(dev, speed=speed, op_seconds={graph.sha256: tuple(secs)}, **ovh)
    devices["client"] = client_device(
        fleet, online[names[0]] if probe else None, cache, max_age_s, fresh
    )
    links = probe_links(fleet, [online[n] for n in names]) if probe else {}
    return Profile(devices, links, source="client", sink="client")


def probe_links(fleet: Fleet, nodes: list[NodeInfo], nbytes: int = 1_000_000
                ) -> dict[tuple[str, str], Link]:
    """Links with probed bandwidth and the latency of a real data-plane hop.

    Bandwidth comes from the service-socket probes (client <-> node from here, node ->
    node by `probe` commands). Latency is what a small tensor's hop adds to a round trip
    through forward stages: client <-> node, half the round trip client -> node ->
    client (header encode/decode, sockets, not just a ping); node a -> node b, the round
    trip client -> a -> b -> client minus client -> a -> client: one more receiving data
    plane (wake-up, decode, dispatch) and one more send, which the half round trip of a
    client echo under-counts by half.
    """
    links: dict[tuple[str, str], Link] = {}
    ctx = zmq.Context.instance()
    hop, pair = hop_latencies(fleet, nodes)
    for n in nodes:
        with ServiceClient(n.service_endpoint, ctx, 30) as svc:
            r = svc.probe(nbytes, 3)
        links[("client", n.name)] = links[(n.name, "client")] = _link(r, hop[n.name])
    for a in nodes:
        for b in nodes:
            if a.name != b.name:
                r = fleet.control.command(a.name, m.Probe, 60, endpoint=b.service_endpoint,
                                          nbytes=nbytes, repetitions=3)
                links[(a.name, b.name)] = _link(r, pair[(a.name, b.name)])
    return links


def hop_latencies(fleet: Fleet, nodes: list[NodeInfo], rounds: int = 50
                  ) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """({node: half round trip client -> node -> client}, {(a, b): what a -> b adds}).

    Every node gets a throw-away deployment of forward stages: `back` (to the client) and
    one `to:<b>` per other node (to b's `back`). Variants alternate round by round so a
    drifting load hits all alike; each figure is a median over `rounds`.
    """
    dep = f"_hop-{fleet.control.client_id[-8:]}"
    inp = (m.InputSpec("x", "float32", (1, 64)),)
    loaded = []
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    pushes: dict[str, zmq.Socket] = {}
    try:
        for a in nodes:
            stages = [m.StageSpec("back", None, inp, (m.Route("x", CLIENT),))]
            stages += [
                m.StageSpec(f"to:{b.name}", None, inp, (m.Route("x", b.data_endpoint, "back"),))
                for b in nodes
                if b.name != a.name
            ]
            fleet.control.command(
                a.name, m.Deploy, 30, deployment=dep, epoch=0, stages=tuple(stages)
            )
            loaded.append(a)
        pull.linger = 0
        local = all(n.data_endpoint.startswith("tcp://127.") for n in nodes)
        port = pull.bind_to_random_port("tcp://127.0.0.1" if local else "tcp://*")
        reply = {n.name: f"tcp://{local_address_towards(n.data_endpoint)}:{port}" for n in nodes}
        for n in nodes:
            s = pushes[n.name] = ctx.socket(zmq.PUSH)
            s.linger = 0
            s.connect(n.data_endpoint)
        variants = [(a, "back") for a in nodes] + [(a, f"to:{b.name}") for a in nodes for b in nodes
                                                   if b.name != a.name]
        x = np.zeros((1, 64), np.float32)
        rtts: dict[tuple[str, str], list[float]] = {(a.name, st): [] for a, st in variants}
        for k in range(rounds + 3):
            for a, stage in variants:
                h = Header("data", dep, 0, f"h{k}", stage, reply[a.name], (meta_for("x", x),))
                t = time.perf_counter()
                pushes[a.name].send_multipart(encode(h, [x]), copy=False)
                if not pull.poll(5000):
                    raise FleetError(f"node {a.name!r}: no echo through stage {stage!r} of its "
                                     f"data endpoint {a.data_endpoint} within 5 s")
                pull.recv_multipart()
                if k >= 3:  # the first rounds set up connections
                    rtts[(a.name, stage)].append(time.perf_counter() - t)
        med = {key: statistics.median(v) for key, v in rtts.items()}
        hop = {a.name: med[(a.name, "back")] / 2 for a in nodes}
        pair = {(a.name, b.name): max(med[(a.name, f"to:{b.name}")] - med[(a.name, "back")], 0.0)
                for a in nodes for b in nodes if b.name != a.name}
        return hop, pair
    finally:
        pull.close()
        for s in pushes.values():
            s.close()
        for a in loaded:
            fleet.control.command(a.name, m.Undeploy, 10, deployment=dep)


def _link(r: ProbeResult, latency: float) -> Link:
    return Link(bandwidth=max(r.bandwidth_bps / 8, 1.0), latency=max(latency, 0.0))
