"""Plan -> parts on the nodes -> stages loaded -> epoch active -> retained record.

`deploy_plan` is the one deploy path: `tilefleet deploy --plan`, `deploy MODEL` (plan,
then this), `Fleet.deploy` and every live re-plan ship a planner.planning.plan.Plan
through it; the parts are those `tilefleet slice` cuts (planner.fleet.wiring).

Order matters for live changes: the new epoch is loaded next to the old one on every
node, then the record is published (clients send new requests to the new epoch), and
only then is the epoch activated, which drops older epochs. Requests that were still in
an old epoch get `unknown_epoch` and are re-sent by the client to the new one.

A switch ships only the parts a node does not hold (the store is content-addressed) and
the nodes share the running interpreter of every stage whose part, tile and threads did
not change (`reuse`); the record's `extra.switch` says what was shipped, loaded, reused.
Clean-up (undeploy, nodes that left) is bounded: a node that does not answer a ping
within `ping_s` (killed, its Last Will not yet seen) is reported as unconfirmed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import zmq

from node.errors import WireError
from node.wire import messages as m
from node.wire.codes import Code
from node.wire.results import CommandResult, DeployResult
from node.wire.service import ServiceClient
from planner.errors import FleetError
from planner.fleet.control import CommandError, Control
from planner.fleet.progress import OnProgress, StageProgress
from planner.fleet.record import Record, tensor_json
from planner.fleet.wiring import Wiring, wire
from planner.model.graph import ModelGraph
from planner.planning.plan import MANUAL, Plan, check_model

log = logging.getLogger(__name__)


def upload_parts(online: Mapping[str, dict[str, Any]], wiring: Wiring,
                 on_progress: OnProgress | None = None, timeout_s: float = 60.0) -> int:
    """Upload each node's missing parts ("have?" first, all nodes at once); bytes sent.

    Reports stage "uploading parts" (bytes) to `on_progress` after every chunk.
    """
    ctx = zmq.Context.instance()

    def ask(node: str) -> list[str]:
        with ServiceClient(online[node]["service_endpoint"], ctx, timeout_s) as svc:
            try:
                return svc.missing(wiring.parts_of(node))
            except WireError as exc:
                raise FleetError(f"node {node!r}: part store unreachable: {exc}") from None

    nodes = list(wiring.specs)
    with ThreadPoolExecutor(max(1, len(nodes))) as pool:
        todo = dict(zip(nodes, pool.map(ask, nodes), strict=True))
    total = sum(len(wiring.parts[s].data) for shas in todo.values() for s in shas)
    if not total:
        return 0
    nodes_to = sum(1 for s in todo.values() if s)
    bar = StageProgress(on_progress, "uploading parts", total, "B", f"to {nodes_to} node(s)")

    def send(node: str) -> None:
        with ServiceClient(online[node]["service_endpoint"], ctx, timeout_s) as svc:
            for sha in todo[node]:
                try:
                    svc.upload(wiring.parts[sha].data, sha, skip_if_present=False,
                               on_chunk=bar.add)
                except WireError as exc:
                    raise FleetError(f"node {node!r}: upload of part {sha[:12]} failed: "
                                     f"{exc}") from None

    with ThreadPoolExecutor(max(1, len(todo))) as pool:
        for f in [pool.submit(send, n) for n, shas in todo.items() if shas]:
            f.result()
    bar.finish()
    return total


def _all(control: Control, calls: Mapping[str, tuple[type, dict[str, Any]]], what: str,
         timeout_s: float) -> dict[str, CommandResult]:
    """Send one command per node in parallel; CommandError for the first that fails."""
    futs = {n: control.send(n, cls, **kw) for n, (cls, kw) in calls.items()}
    return {n: control.result(n, f, what, timeout_s) for n, f in futs.items()}


def deploy_plan(control: Control, graph: ModelGraph, plan: Plan, name: str, *,
                timeout_s: float = 60.0, on_progress: OnProgress | None = None,
                reuse: bool = True) -> Record:
    """Ship, load and activate `plan` as the next epoch of deployment `name`.

    The plan must be of `graph` (same sha256) and use online nodes only (PlanError).
    The record keeps the plan (without its embedded profile), its strategy and objective;
    a hand-written plan (strategy "manual") is recorded without a plan, as before.
    `reuse` (default) lets nodes keep the running interpreter of unchanged stages;
    False loads every stage afresh (the baseline of tools/bench_switch.py).
    """
    t0 = time.monotonic()
    online = control.online()
    endpoints = {n: r["data_endpoint"] for n, r in online.items() if r.get("data_endpoint")}
    check_model(plan, graph)
    wiring = wire(graph, plan.stages, endpoints)
    old = control.record(name)
    epoch = int(old["epoch"]) + 1 if old else 1
    t_wire = time.monotonic()
    shipped = upload_parts(online, wiring, on_progress, timeout_s)
    calls = {n: (m.Deploy, {"deployment": name, "epoch": epoch, "stages": tuple(specs),
                            "reuse": reuse})
             for n, specs in wiring.specs.items()}
    t = time.monotonic()
    try:
        ready, dropped_first = _deploy_all(control, calls, name, epoch, timeout_s)
    except CommandError:
        _quietly(control, {n: (m.Retire, {"deployment": name, "epochs": (epoch,)})
                           for n in calls}, "retire")
        raise
    loaded = sum(len(r.loaded) for r in ready.values())
    reused = sum(len(r.reused) for r in ready.values())
    log.info("deployment %s epoch %d: %d stage(s) ready on %d node(s) in %.2f s "
             "(%d interpreter(s) loaded, %d reused; %d bytes shipped)", name, epoch,
             len(wiring.stages), len(calls), time.monotonic() - t, loaded, reused, shipped)
    now = time.time()
    held = sum(r.memory.in_use_bytes for r in ready.values())
    switch = {"bytes_shipped": shipped, "loaded": loaded, "reused": reused,
              "held_bytes": held,  # estimated, on the new epoch's nodes, both epochs loaded
              "dropped_first": dropped_first,  # nodes that could not hold both epochs
              "wire_s": round(t_wire - t0, 4), "upload_s": round(t - t_wire, 4),
              "load_s": round(time.monotonic() - t, 4)}
    rec = Record(
        name=name, fleet=control.fleet, epoch=epoch,
        model={"sha256": graph.sha256, "file": graph.source,
               "inputs": [tensor_json(graph.tensors[i]) for i in graph.inputs],
               "outputs": [tensor_json(graph.tensors[i]) for i in graph.outputs]},
        nodes={n: {"data_endpoint": online[n]["data_endpoint"],
                   "service_endpoint": online[n]["service_endpoint"],
                   "board": online[n].get("board", "")} for n in calls},
        stages=dict(wiring.stages), entry=tuple(wiring.entry), results=wiring.results,
        strategy=plan.strategy, objective=plan.objective,
        plan=None if plan.strategy == MANUAL else replace(plan, profile=None).to_json(),
        predicted=dict(plan.predicted) if plan.strategy != MANUAL else None,
        created=float(old.get("created", now)) if old else now, updated=now,
        extra={"switch": switch})
    control.publish_record(name, rec.to_json())
    gone = [n for n in (old or {}).get("nodes", {}) if n not in calls and n in online]
    with ThreadPoolExecutor(1) as pool:  # nodes that left drop it, while the rest activate
        left = pool.submit(_quietly, control, {n: (m.Undeploy, {"deployment": name})
                                               for n in gone}, "undeploy")
        _all(control, {n: (m.Activate, {"deployment": name, "epoch": epoch}) for n in calls},
             f"activate of {name!r} epoch {epoch}", timeout_s)
        left.result()
    return rec


def _deploy_all(control: Control, calls: Mapping[str, tuple[type, dict[str, Any]]],
                name: str, epoch: int, timeout_s: float
                ) -> tuple[dict[str, DeployResult], list[str]]:
    """Load the new epoch everywhere; (replies by node, nodes that dropped older epochs).

    Loading next to the running epoch (make before break) needs memory for the stages
    that change. A node whose budget cannot hold both refuses (`memory_budget`); it
    then drops its older epochs of the deployment first and loads again (break before
    make, on that node only: requests caught there get `unknown_epoch` and are re-sent
    by the clients under the new epoch). Any other refusal raises CommandError.
    """
    what = f"deploy of {name!r} epoch {epoch}"
    futs = {n: control.send(n, cls, **kw) for n, (cls, kw) in calls.items()}
    ready: dict[str, DeployResult] = {}
    full: list[str] = []
    error: CommandError | None = None
    for n, f in futs.items():
        try:
            ready[n] = control.result(n, f, what, timeout_s)
        except CommandError as exc:
            if exc.code == Code.MEMORY_BUDGET and exc.details.get("fits_without_older_epochs"):
                full.append(n)
            elif error is None:
                error = exc
    if error is not None:
        raise error
    if full:
        log.warning("deployment %s epoch %d: node(s) %s cannot hold both epochs within "
                    "their memory budget; dropping the older epoch(s) there first", name,
                    epoch, ", ".join(full))
        outcome = confirm(control, {n: (m.Retire, {"deployment": name,
                                                   "epochs": tuple(range(epoch))})
                                    for n in full}, "retire", timeout_s)
        if outcome.errors or outcome.unconfirmed:
            n = (list(outcome.errors) + outcome.unconfirmed)[0]
            raise CommandError(outcome.errors.get(n) or f"node {n!r} did not answer retire",
                               n, Code.RETIRE_FAILED)
        try:
            ready.update(_all(control, {n: calls[n] for n in full}, what, timeout_s))
        except CommandError as exc:  # nothing of the deployment left there: say so plainly
            raise CommandError(f"deployment {name!r} no longer runs on node(s) "
                               f"{', '.join(full)}: their older epoch was dropped to make "
                               f"room and epoch {epoch} did not load ({exc}); deploy again",
                               exc.node, exc.code, exc.details) from None
    return ready, full


def _quietly(control: Control, calls: Mapping[str, tuple[type, dict[str, Any]]], what: str,
             timeout_s: float = 10.0) -> dict[str, str]:
    """Best-effort commands (clean-up); returns node -> error for those that failed."""
    outcome = confirm(control, calls, what, timeout_s)
    for n in outcome.unconfirmed:
        log.warning("node %r did not confirm %s (no reply, no ping reply)", n, what)
    return outcome.errors


@dataclass
class Outcome:
    """What the nodes said to a best-effort command."""

    done: dict[str, CommandResult | None] = field(default_factory=dict)  # None: nothing to do
    errors: dict[str, str] = field(default_factory=dict)  # node -> one-line error
    unconfirmed: list[str] = field(default_factory=list)  # neither reply nor ping reply


def confirm(control: Control, calls: Mapping[str, tuple[type, dict[str, Any]]], what: str,
            timeout_s: float = 10.0, ping_s: float = 1.0) -> Outcome:
    """Send commands in parallel and wait, bounded, for their replies.

    Each node is pinged along with its command (pings are answered on the agent's
    network thread even while its command thread is busy): a node that has not
    replied after `ping_s` but answered the ping gets up to `timeout_s` for the
    command; one that answered neither is given up on (killed, or cut off, before the
    broker published its Last Will). `unknown_deployment` and `unknown_epoch` replies
    count as done: there was nothing left to free.
    """
    futs = {n: control.send(n, cls, **kw) for n, (cls, kw) in calls.items()}
    pings = {n: control.send(n, m.Ping) for n in calls}
    out = Outcome()
    deadline = time.monotonic() + ping_s
    if futs:
        wait(list(futs.values()), timeout=ping_s)
    slow = [n for n, f in futs.items() if not f.done()]
    if slow:
        wait([pings[n] for n in slow], timeout=max(0.0, deadline - time.monotonic()))
    for p in pings.values():
        if not p.done():
            control.forget(p)
    for n, f in futs.items():
        if not f.done() and not pings[n].done():
            control.forget(f)
            out.unconfirmed.append(n)
            continue
        try:
            out.done[n] = control.result(n, f, what, timeout_s)
        except CommandError as exc:
            if exc.code in (Code.UNKNOWN_DEPLOYMENT, Code.UNKNOWN_EPOCH):
                out.done[n] = None
            elif exc.code in (Code.TIMEOUT, Code.OFFLINE):  # offline: its Last Will came first
                out.unconfirmed.append(n)
            else:
                out.errors[n] = str(exc)
                log.warning("%s", exc)
    return out


def undeploy(control: Control, name: str, timeout_s: float = 5.0, ping_s: float = 1.0
             ) -> dict[str, Any]:
    """Drop every epoch of `name` on its nodes and clear the record.

    Bounded by about `ping_s` for nodes that are gone without a Last Will yet (listed
    as `unconfirmed`), `timeout_s` for nodes that answer pings but are busy.
    """
    doc = control.record(name)
    if doc is None:
        raise FleetError(f"unknown deployment {name!r} (known: "
                         f"{', '.join(sorted(control.records)) or 'none'})")
    rec = Record.from_json(doc)
    online = control.online()
    nodes = [n for n in rec.nodes if n in online]
    outcome = confirm(control, {n: (m.Undeploy, {"deployment": name}) for n in nodes},
                      "undeploy", timeout_s, ping_s)
    control.publish_record(name, None)
    if outcome.unconfirmed:
        log.warning("undeploy %s: node(s) %s did not confirm (no reply, no ping reply in "
                    "%.1f s)", name, ", ".join(outcome.unconfirmed), ping_s)
    return {"deployment": name, "nodes": [n for n in nodes if n in outcome.done],
            "unconfirmed": outcome.unconfirmed,
            "offline": [n for n in rec.nodes if n not in online], "errors": outcome.errors}
