"""Layout -> parts on the nodes -> stages loaded -> epoch active -> retained record.

Order matters for live changes: the new epoch is loaded next to the old one on every
node, then the record is published (clients send new requests to the new epoch), and
only then is the epoch activated, which drops older epochs. Requests that were still in
an old epoch get `unknown_epoch` and are re-sent by the client to the new one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq

from node.errors import WireError
from node.wire import messages as m
from node.wire.service import CHUNK_BYTES, ServiceClient
from planner.errors import FleetError
from planner.fleet.control import CommandError, Control
from planner.fleet.record import Record, tensor_json
from planner.graph import ModelGraph
from planner.layout import StageLayout
from planner.progress import Progress
from planner.wiring import Wiring, wire

log = logging.getLogger(__name__)


def upload_parts(online: Mapping[str, dict[str, Any]], wiring: Wiring, progress: bool = True,
                 timeout_s: float = 60.0) -> int:
    """Upload each node's missing parts ("have?" first); returns the bytes sent."""
    ctx = zmq.Context.instance()
    todo: dict[str, list[str]] = {}
    for node in wiring.specs:
        with ServiceClient(online[node]["service_endpoint"], ctx, timeout_s) as svc:
            try:
                todo[node] = svc.missing(wiring.parts_of(node))
            except WireError as exc:
                raise FleetError(f"node {node!r}: part store unreachable: {exc}") from None
    total = sum(len(wiring.parts[s].data) for shas in todo.values() for s in shas)
    if not total:
        return 0
    bar = Progress("uploading parts", total, " MB", progress, scale=1e6)

    def send(node: str) -> None:
        with ServiceClient(online[node]["service_endpoint"], ctx, timeout_s) as svc:
            for sha in todo[node]:
                try:
                    _put(svc, wiring.parts[sha].data, sha, bar)
                except WireError as exc:
                    raise FleetError(f"node {node!r}: upload of part {sha[:12]} failed: "
                                     f"{exc}") from None

    with ThreadPoolExecutor(max(1, len(todo))) as pool:
        for f in [pool.submit(send, n) for n, shas in todo.items() if shas]:
            f.result()
    bar.done(f"to {sum(1 for s in todo.values() if s)} node(s)")
    return total


def _put(svc: ServiceClient, data: bytes, sha: str, bar: Progress) -> None:
    """Chunked, acknowledged upload that moves the bar per chunk (restarts from 0 once)."""
    view, offset, size, restarted = memoryview(data), 0, len(data), False
    while True:
        end = min(offset + CHUNK_BYTES, size)
        try:
            rep, _ = svc.request("put", [view[offset:end]], sha256=sha, size=size,
                                 offset=offset, last=end >= size)
        except WireError as exc:
            if exc.code == "out_of_order" and not restarted:
                bar.add(-offset)
                offset, restarted = 0, True  # the node lost the partial upload: start over
                continue
            raise
        bar.add(end - offset)
        offset = rep["next"]
        if end >= size:
            return


def _all(control: Control, calls: Mapping[str, tuple[type, dict[str, Any]]], what: str,
         timeout_s: float) -> dict[str, dict[str, Any]]:
    """Send one command per node in parallel; CommandError for the first that fails."""
    futs = {n: control.send(n, cls, **kw) for n, (cls, kw) in calls.items()}
    return {n: control.result(n, f, what, timeout_s) for n, f in futs.items()}


def deploy_layout(control: Control, graph: ModelGraph, layout: tuple[StageLayout, ...],
                  name: str, *, strategy: str = "", plan: dict[str, Any] | None = None,
                  predicted: dict[str, Any] | None = None, timeout_s: float = 60.0,
                  progress: bool = True) -> Record:
    """Ship, load and activate a layout as the next epoch of deployment `name`."""
    online = control.online()
    endpoints = {n: r["data_endpoint"] for n, r in online.items() if r.get("data_endpoint")}
    wiring = wire(graph, layout, endpoints)
    old = control.record(name)
    epoch = int(old["epoch"]) + 1 if old else 1
    upload_parts(online, wiring, progress, timeout_s)
    calls = {n: (m.Deploy, {"deployment": name, "epoch": epoch, "stages": tuple(specs)})
             for n, specs in wiring.specs.items()}
    t = time.monotonic()
    try:
        _all(control, calls, f"deploy of {name!r} epoch {epoch}", timeout_s)
    except CommandError:
        _quietly(control, {n: (m.Retire, {"deployment": name, "epochs": (epoch,)})
                           for n in calls}, "retire")
        raise
    log.info("deployment %s epoch %d: %d stage(s) ready on %d node(s) in %.2f s", name, epoch,
             len(wiring.stages), len(calls), time.monotonic() - t)
    now = time.time()
    rec = Record(
        name=name, fleet=control.fleet, epoch=epoch,
        model={"sha256": graph.sha256, "file": graph.source,
               "inputs": [tensor_json(graph.tensors[i]) for i in graph.inputs],
               "outputs": [tensor_json(graph.tensors[i]) for i in graph.outputs]},
        layout=[s.to_json() for s in layout],
        nodes={n: {"data_endpoint": online[n]["data_endpoint"],
                   "service_endpoint": online[n]["service_endpoint"],
                   "board": online[n].get("board", "")} for n in calls},
        stages={sid: st.to_json() for sid, st in wiring.stages.items()},
        entry=[{"tensor": r.tensor, "to": r.to, "stage": r.stage, "name": r.name,
                "region": list(r.region) if r.region else None} for r in wiring.entry],
        results=wiring.results, strategy=strategy, plan=plan, predicted=predicted,
        created=float(old.get("created", now)) if old else now, updated=now)
    control.publish_record(name, rec.to_json())
    _all(control, {n: (m.Activate, {"deployment": name, "epoch": epoch}) for n in calls},
         f"activate of {name!r} epoch {epoch}", timeout_s)
    if old:  # nodes that left the deployment drop it entirely
        gone = [n for n in old.get("nodes", {}) if n not in calls and n in online]
        _quietly(control, {n: (m.Undeploy, {"deployment": name}) for n in gone}, "undeploy")
    return rec


def _quietly(control: Control, calls: Mapping[str, tuple[type, dict[str, Any]]], what: str,
             timeout_s: float = 10.0) -> dict[str, str]:
    """Best-effort commands (clean-up); returns node -> error for those that failed."""
    futs = {n: control.send(n, cls, **kw) for n, (cls, kw) in calls.items()}
    errors = {}
    for n, f in futs.items():
        try:
            control.result(n, f, what, timeout_s)
        except CommandError as exc:
            if exc.code not in ("unknown_deployment", "unknown_epoch"):
                errors[n] = str(exc)
                log.warning("%s", exc)
    return errors


def undeploy(control: Control, name: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Drop every epoch of `name` on its nodes and clear the record."""
    doc = control.record(name)
    if doc is None:
        raise FleetError(f"unknown deployment {name!r} (known: "
                         f"{', '.join(sorted(control.records)) or 'none'})")
    rec = Record.from_json(doc)
    online = control.online()
    nodes = [n for n in rec.nodes if n in online]
    errors = _quietly(control, {n: (m.Undeploy, {"deployment": name}) for n in nodes},
                      "undeploy", timeout_s)
    control.publish_record(name, None)
    return {"deployment": name, "nodes": nodes,
            "offline": [n for n in rec.nodes if n not in online], "errors": errors}
