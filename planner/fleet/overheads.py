"""Measure what a stage costs outside its interpreter, on a node and on this client.

Echo round trips through small deployments on the node, each compared with a forward
stage (which runs inline in the node's receiving thread, so it costs what the link
latency already holds):
- the profiled model's op groups as a chain of stages on the node (else a 1-op part):
  + hand-off to the stage thread, set/get tensors, the in-process hand-off to the next
  stage, an interpreter that runs once per frame after the others -> `stage_overhead_s`
  (invokes measured by `profile` and the two socket hops in and out subtracted; the
  lower quartile of its round trips, so load from other processes is not counted);
- a forward stage gathering 4 row pieces vs one whole message, small and large tensor:
  + 3 messages decoded and a stitch -> `piece_overhead_s` (small) and `copy_s_per_byte`
  (what the large tensor adds); the client's own extra send time is subtracted;
- this client: its CPU seconds per frame through the real deployment client
  (`DataClient`: futures, tracker, result thread, sockets) -> the client's
  `stage_overhead_s`; 4 column pieces vs one message, small and large -> its
  `piece_overhead_s` and `copy_s_per_byte` (slicing).
Every other figure is the median of `rounds` round trips after a warm-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from node.profiler import random_input
from node.resources import host_identity, usable_cores
from node.wire import messages as m
from node.wire.codes import Code
from node.wire.frames import CLIENT, Header, encode, meta_for
from node.wire.service import ServiceClient
from planner.errors import FleetError
from planner.fleet.control import CommandError
from planner.fleet.dataclient import DataClient, Entry, local_address_towards
from planner.fleet.requests import Tracker
from planner.fleet.wiring import wire
from planner.model.graph import ModelGraph
from planner.planning.plan import Stage
from planner.planning.profile import Device

if TYPE_CHECKING:
    from planner.fleet.nodes import FleetAccess as Fleet
    from planner.fleet.nodes import NodeInfo

log = logging.getLogger(__name__)
SMALL, LARGE = (1, 8, 8, 4), (1, 64, 64, 16)  # 1 KiB and 256 KiB of float32
NODE_KEYS = ("stage_overhead_s", "piece_overhead_s", "copy_s_per_byte")
Message = tuple[tuple[Any, ...], list[np.ndarray]]  # (tensor metas, arrays) of one data message


def tiny_part(shape: tuple[int, ...] = SMALL) -> bytes:
    """A one-op model (RELU on `x`, output `y`): a stage whose invoke costs next to nothing."""
    from planner.modelbuild.builder import GraphBuilder

    g = GraphBuilder("echo")
    g.output(g.relu(g.input(shape, name="x"), name="y"))
    return g.build()


class _Echo:
    """A throw-away deployment on one node and raw sockets to time round trips."""

    def __init__(
        self, fleet: Fleet, node: NodeInfo, stages: tuple[m.StageSpec, ...], dep: str = ""
    ) -> None:
        self.fleet, self.node = fleet, node
        self.dep = dep or f"_ovh-{fleet.control.client_id[-8:]}"
        fleet.control.command(node.name, m.Deploy, 30, deployment=self.dep, epoch=0, stages=stages)
        ctx = zmq.Context.instance()
        self.pull, self.push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        self.pull.linger = self.push.linger = 0
        local = node.data_endpoint.startswith("tcp://127.")
        port = self.pull.bind_to_random_port("tcp://127.0.0.1" if local else "tcp://*")
        self.reply = f"tcp://{local_address_towards(node.data_endpoint)}:{port}"
        self.push.connect(node.data_endpoint)

    def rtts(self, variants: list[tuple[str, list[Message]]], rounds: int, replies: int = 1,
             quantile: float = 0.5) -> list[tuple[float, float]]:
        """Per (stage, messages) variant: median (round trip until `replies` results, client
        send seconds); variants alternate round by round so a drifting load hits all alike."""
        got: list[tuple[list[float], list[float]]] = [([], []) for _ in variants]
        for k in range(rounds + 3):
            for (stage, pieces), (rtts, sends) in zip(variants, got, strict=True):
                t = time.perf_counter()
                for metas, arrs in pieces:
                    h = Header("data", self.dep, 0, f"o{k}", stage, self.reply, metas)
                    self.push.send_multipart(encode(h, arrs), copy=False)
                sent = time.perf_counter() - t
                for _ in range(replies):
                    if not self.pull.poll(5000):
                        raise FleetError(
                            f"node {self.node.name!r}: no echo from stage {stage!r} within 5 s"
                        )
                    self.pull.recv_multipart()
                if k >= 3:  # the first rounds set up connections
                    rtts.append(time.perf_counter() - t)
                    sends.append(sent)
        return [(_quantile(r, quantile), statistics.median(s)) for r, s in got]

    def close(self) -> None:
        self.pull.close()
        self.push.close()
        self.fleet.control.command(self.node.name, m.Undeploy, 10, deployment=self.dep)


def _quantile(xs: list[float], q: float) -> float:
    """The q-quantile of xs (q = 0.5: the median)."""
    return statistics.median(xs) if q == 0.5 else float(np.quantile(xs, q))


def _rows(x: np.ndarray, n: int) -> list[Message]:
    """x as n row pieces (region messages), or whole when n == 1."""
    if n == 1:
        return [((meta_for("x", x),), [x])]
    h = x.shape[1]
    cuts = [round(h * i / n) for i in range(n + 1)]
    return [
        (
            (meta_for("x", x[:, a:b], x.shape, (a, b, 0, x.shape[2])),),
            [np.ascontiguousarray(x[:, a:b])],
        )
        for a, b in zip(cuts, cuts[1:], strict=False)
    ]


def measure_chain(fleet: Fleet, node: NodeInfo, graph: ModelGraph, groups: list[tuple[int, int]],
                  invoke_s: list[float], hop_s: float, bandwidth: float, rounds: int = 30) -> float:
    """What a stage adds to its invoke, from the model's groups as a chain of stages on the node.

    The chain runs like a pipeline does (each interpreter once per frame, after the others),
    and hands activations from stage to stage inside the node (no socket: see
    node/dataplane.py), as the cost model's zero transfer on one device says; so its round
    trip minus the groups' invokes and the two socket hops (client -> first stage, last
    stage -> client: a forward echo's half round trip plus bytes over the loopback
    bandwidth) leaves k stage overheads.
    """
    stages = tuple(Stage(k, (a, b), node.name) for k, (a, b) in enumerate(groups))
    w = wire(graph, stages, {node.name: node.data_endpoint})
    with ServiceClient(node.service_endpoint, zmq.Context.instance(), 60) as svc:
        for p in w.parts.values():
            svc.upload(p.data, p.sha256)
    dep = f"_chain-{fleet.control.client_id[-8:]}"
    echo = _Echo(fleet, node, tuple(w.specs[node.name]), dep)
    try:
        rng = np.random.default_rng(0)
        ins = {graph.tensors[i].name: graph.tensors[i] for i in graph.inputs}
        arrs = {n: random_input(tuple(t.shape), np.dtype(t.dtype), rng) for n, t in ins.items()}
        first = w.entry[0].stage
        msg = (
            tuple(meta_for(r.tensor, arrs[r.tensor]) for r in w.entry),
            [arrs[r.tensor] for r in w.entry],
        )
        senders = {s.id for s in w.specs[node.name] for r in s.routes if r.to == CLIENT}
        # the lower quartile: the node's own cost per stage, not the contention of whatever
        # else runs on it (a joiner is profiled next to the live stream it may relieve)
        (rtt, _), = echo.rtts([(first, [msg])], rounds, replies=len(senders), quantile=0.25)
    finally:
        echo.close()
    edge = sum(graph.tensors[i].nbytes for i in graph.inputs) + sum(
        graph.tensors[i].nbytes for i in graph.outputs
    )
    hops = 2 * hop_s + edge / bandwidth
    return max((rtt - sum(invoke_s) - hops) / len(groups), 0.0)


def measure_node(fleet: Fleet, node: NodeInfo, graph: ModelGraph | None = None,
                 groups: list[tuple[int, int]] | None = None, invoke_s: list[float] | None = None,
                 rounds: int = 40) -> dict[str, Any]:
    """{stage_overhead_s, piece_overhead_s, copy_s_per_byte} of one node, plus the raw figures;
    the stage overhead from the model's `groups` as a chain when given, else a 1-op part."""
    part = tiny_part()
    sha = hashlib.sha256(part).hexdigest()
    with ServiceClient(node.service_endpoint, zmq.Context.instance(), 60) as svc:
        svc.upload(part, sha)
    invoke = fleet.control.command(node.name, m.Profile, 60, parts=(sha,),
                                   repetitions=20).median_s[sha]

    def spec(
        sid: str, shape, pieces: int = 1, part_sha: str | None = None, out: str = "x"
    ) -> m.StageSpec:
        return m.StageSpec(
            sid, part_sha, (m.InputSpec("x", "float32", shape, pieces),), (m.Route(out, CLIENT),)
        )

    stages = (spec("f", SMALL), spec("p", SMALL, part_sha=sha, out="y"), spec("g", SMALL, 4),
              spec("F", LARGE), spec("G", LARGE, 4))
    echo = _Echo(fleet, node, stages)
    try:
        small = np.ones(SMALL, np.float32)
        large = np.ones(LARGE, np.float32)
        (fwd, send1_s), (run, _), (four_s, send4_s), (one_l, send1_l), (four_l, send4_l) = (
            echo.rtts(
                [
                    ("f", _rows(small, 1)),
                    ("p", _rows(small, 1)),
                    ("g", _rows(small, 4)),
                    ("F", _rows(large, 1)),
                    ("G", _rows(large, 4)),
                ],
                rounds,
            )
        )
    finally:
        echo.close()
    one_s = fwd
    stage = max(run - fwd - invoke, 0.0)
    bandwidth = 2 * (large.nbytes - small.nbytes) / max(one_l - fwd, 1e-9)  # loopback, both ways
    chain = None
    if graph is not None and groups and len(groups) > 1:
        try:
            chain = measure_chain(fleet, node, graph, groups, invoke_s or [], fwd / 2, bandwidth)
            stage = chain
        except CommandError as exc:
            if exc.code != Code.MEMORY_BUDGET:
                raise
            # the whole model as a chain does not fit this node's budget (the model
            # that is being split because it is too big for one board): keep the 1-op
            # part's figure, which leaves out only the in-process hand-off between stages
            log.info("node %s: chain overhead not measured (%s); 1-op part figure kept",
                     node.name, exc)
    piece = max(four_s - one_s - (send4_s - send1_s), 0.0) / 3
    extra_l = four_l - one_l - (send4_l - send1_l) - 3 * piece
    copy = max(extra_l, 0.0) / (large.nbytes - small.nbytes)
    return {
        "stage_overhead_s": stage,
        "piece_overhead_s": piece,
        "copy_s_per_byte": copy,
        "raw": {
            "forward_rtt_s": fwd,
            "part_rtt_s": run,
            "part_invoke_s": invoke,
            "chain_stage_s": chain,
            "loopback_bandwidth": bandwidth,
            "gather4_small_rtt_s": four_s,
            "whole_small_rtt_s": one_s,
            "gather4_large_rtt_s": four_l,
            "whole_large_rtt_s": one_l,
        },
    }


def measure_client(fleet: Fleet, node: NodeInfo, rounds: int = 100) -> dict[str, Any]:
    """This client's CPU seconds per frame, per extra sliced piece and per sliced byte.

    Column pieces, as tile inputs usually are, so slicing copies (strided) like it will.
    """
    def stage(sid: str, shape: tuple[int, ...], pieces: int = 1) -> m.StageSpec:
        return m.StageSpec(
            sid, None, (m.InputSpec("x", "float32", shape, pieces),), (m.Route("x", CLIENT),)
        )

    def quarters(sid: str, shape: tuple[int, ...]) -> tuple[m.Route, ...]:
        w = shape[2]
        return tuple(
            m.Route("x", to, sid, region=(0, shape[1], w * i // 4, w * (i + 1) // 4))
            for i in range(4)
        )

    to = node.data_endpoint
    echo = _Echo(
        fleet,
        node,
        (stage("s", SMALL), stage("S", SMALL, 4), stage("l", LARGE), stage("L", LARGE, 4)),
    )
    cases = [((m.Route("x", to, "s"),), SMALL), (quarters("S", SMALL), SMALL),
             ((m.Route("x", to, "l"),), LARGE), (quarters("L", LARGE), LARGE)]
    cpu = []
    try:
        for routes, shape in cases:
            inp = {"x": np.ones(shape, np.float32)}
            tracker = Tracker()
            tracker.set_results(0, {"x": {"dtype": "float32", "shape": list(shape), "pieces": 1}})
            client = DataClient(
                lambda routes=routes: Entry(echo.dep, 0, routes), local_address_towards(to), tracker
            )
            try:
                for _ in range(5):
                    client.submit(inp).result(10)
                t = time.process_time()  # the whole process: caller, result thread, zmq I/O
                for _ in range(rounds):
                    client.submit(inp).result(10)
                cpu.append((time.process_time() - t) / rounds)
            finally:
                client.close()
    finally:
        echo.close()
    piece = max(cpu[1] - cpu[0], 0.0) / 3
    copy = max(cpu[3] - cpu[2] - 3 * piece, 0.0) / (nbytes(LARGE) - nbytes(SMALL))
    return {
        "stage_overhead_s": cpu[0],
        "piece_overhead_s": piece,
        "copy_s_per_byte": copy,
        "raw": {
            "cpu_whole_small_s": cpu[0],
            "cpu_4_small_s": cpu[1],
            "cpu_whole_large_s": cpu[2],
            "cpu_4_large_s": cpu[3],
        },
    }


def nbytes(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) * 4


def client_device(
    fleet: Fleet, node: NodeInfo | None, cache: Path, max_age_s: float, fresh: bool = False
) -> Device:
    """The non-computing `client` on this host, its per-frame costs measured against `node`
    (cached per host; without a node, only what is cached)."""
    host = host_identity()
    path = cache / f"client__{host}.json"
    doc: dict[str, Any] = {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    if node is not None and (fresh or time.time() - doc.get("measured_at", 0) > max_age_s):
        doc = {**measure_client(fleet, node), "measured_at": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
    return Device("client", board="client", compute=False, host=host, host_cores=usable_cores(),
                  **{k: float(doc.get(k, 0.0)) for k in NODE_KEYS})
