"""The agent: wires store, data plane, deployments, profiler and control plane together."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import zmq

from node import __version__, profiler
from node.config import NodeConfig
from node.control import Control
from node.dataplane import DataPlane, Sender
from node.deployments import Deployments, ExecSettings
from node.errors import NodeError
from node.metrics import Counters
from node.resources import describe, micro_benchmark
from node.runtime import RuntimeSettings
from node.service import ServiceHandler
from node.stage_worker import SendFn
from node.store import Store
from node.supervisor import Supervised, Supervisor
from node.wire import messages as m
from node.wire.codes import Code
from node.wire.results import CommandResult, PingResult, StatusResult
from node.wire.service import ServiceClient
from node.wire.topics import Topics

log = logging.getLogger(__name__)


def _no_status(state: str, reason: str) -> None:
    """No control plane (an in-process agent): the supervisor's state has no topic."""


class Agent:
    """One node agent; `start()` then `wait()`; `stop()` from a signal handler.

    The agent is given its I/O: a part store, a data plane (its zmq context and counters
    are the node's) and, unless it is driven in-process through `handle`, an MQTT
    control plane built on the same counters. It attaches its handlers to them and owns
    them from then on: `stop()` stops both and destroys the context. `build_agent` makes
    the usual set from a board config.
    """

    def __init__(self, name: str, cfg: NodeConfig, store: Store, dataplane: DataPlane,
                 control: Control | None = None) -> None:
        self.name, self.cfg, self.store = name, cfg, store
        a = cfg.agent
        self.started = time.time()
        self.dataplane, self.control = dataplane, control
        self.ctx, self.counters = dataplane.ctx, dataplane.counters
        if control is not None and control.counters is not self.counters:
            raise ValueError("the control plane must count into the data plane's Counters")
        self.settings = ExecSettings(threads=a.threads, tile_threads=a.tile_threads,
                                     xnnpack="xnnpack" in a.delegates, queue_size=a.queue_size,
                                     memory_budget_bytes=a.memory_budget_mb << 20)
        self.deployments = Deployments(name, self.store, self.counters, self.settings,
                                       self._sender)
        dataplane.attach(self.deployments.dispatch, ServiceHandler(self.store, self.counters))
        if control is not None:
            control.attach(self.handle, self.resources, self.metrics)
        self.speed_gflops = 0.0
        self._done = threading.Event()
        parts: list[Supervised] = [dataplane] if control is None else [dataplane, control]
        self.supervisor = Supervisor(parts, control.set_state if control else _no_status,
                                     self.counters)

    def _sender(self) -> tuple[SendFn, Any]:
        s = Sender(self.ctx, self.counters, self.cfg.agent.hwm)
        return s.send, s.close

    def start(self) -> None:
        parts = self.store.open()
        log.info("store %s holds %d part(s)", self.store.root, len(parts))
        self.dataplane.start()
        log.info("data %s, service %s", self.dataplane.data_endpoint,
                 self.dataplane.service_endpoint)
        self.speed_gflops = micro_benchmark(self.cfg.agent.benchmark_s)
        if self.control is not None:
            self.control.start()
        self.supervisor.start()

    def wait(self) -> None:
        self._done.wait()

    def stop(self) -> None:
        self.supervisor.stop()
        if self.control is not None:
            self.control.stop()
        self.deployments.stop()
        self.dataplane.stop()
        self.ctx.destroy(linger=0)
        self._done.set()

    def resources(self) -> m.Resources:
        return describe(self.name, self.cfg, self.dataplane.data_endpoint,
                        self.dataplane.service_endpoint, self.speed_gflops)

    def metrics(self) -> m.Metrics:
        c = self.counters.snapshot()
        return m.Metrics(node=self.name, time=time.time(), uptime_s=time.time() - self.started,
                         rss_bytes=psutil.Process(os.getpid()).memory_info().rss,
                         stages=self.deployments.snapshot(), errors=c["errors"],
                         frames_in=c["frames_in"], bytes_in=c["bytes_in"],
                         bytes_out=c["bytes_out"])

    def handle(self, cmd: Any) -> CommandResult:
        """Execute one validated command; raise NodeError for an error reply."""
        d = self.deployments
        if isinstance(cmd, m.Ping):
            return PingResult(time.time())
        if isinstance(cmd, m.StatusQuery):
            deployments = {n: {str(e): tuple(s) for e, s in eps.items()}  # keys as in JSON
                           for n, eps in d.summary().items()}
            return StatusResult(deployments, tuple(self.store.list()), d.memory(),
                                self.dataplane.data_endpoint, self.dataplane.service_endpoint,
                                **self.counters.snapshot())
        if isinstance(cmd, m.Deploy):
            return d.deploy(cmd)
        if isinstance(cmd, m.Undeploy):
            return d.undeploy(cmd.deployment)
        if isinstance(cmd, m.Activate):
            return d.activate(cmd.deployment, cmd.epoch)
        if isinstance(cmd, m.Retire):
            return d.retire(cmd.deployment, cmd.epochs)
        if isinstance(cmd, m.Profile):
            rs = RuntimeSettings(cmd.threads or self.settings.threads, self.settings.xnnpack)
            return profiler.profile(self.store, cmd.parts, rs, cmd.repetitions, cmd.warmup)
        if isinstance(cmd, m.Probe):
            # 10 s per request (64 MiB at 100 Mbit/s takes 5.4 s); the whole probe is
            # bounded by its time limit on the control plane (node/control.py)
            with ServiceClient(cmd.endpoint, self.ctx, timeout_s=10) as c:
                return c.probe(cmd.nbytes, cmd.repetitions)  # names cmd.endpoint
        raise NodeError(f"command {cmd.TYPE!r} not handled", code=Code.BAD_COMMAND)


def build_agent(name: str, cfg: NodeConfig, state_dir: str | Path,
                broker_url: str | None = None, fleet: str = "default") -> Agent:
    """An agent with a fresh zmq context, its data plane per `cfg` and, given a broker,
    its MQTT control plane (without one, commands go through `Agent.handle` only)."""
    a = cfg.agent
    counters = Counters()
    dataplane = DataPlane(zmq.Context(), counters, a.host, a.data_port, a.hwm,
                          a.max_message_mb << 20, node=name)
    control = None
    if broker_url is not None:
        control = Control(name, broker_url, Topics(fleet), counters, a.metrics_interval_s,
                          __version__)
    store = Store(state_dir, a.max_part_mb << 20, a.store_limit_mb << 20)
    return Agent(name, cfg, store, dataplane, control)
