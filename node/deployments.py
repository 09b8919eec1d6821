"""Deployments on this node: deployment -> epoch -> stage id -> StageWorker.

A deploy for a new (or higher) epoch loads its stages next to the old ones; messages
run with the stages of the epoch they carry until `activate`/`retire` drops old epochs.
A new epoch's stage whose part, tile and threads are already loaded for the deployment
shares that interpreter (node/shared_runner.py) instead of loading a second one, and
new interpreters load only within the node's memory budget (node/memory.py estimates),
the planner's profiling probes (names starting with "_") included.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from node.errors import DeployError, StoreError
from node.memory import forward_bytes, mib, stage_bytes
from node.metrics import Counters
from node.runner import PartRunner
from node.runtime import RuntimeSettings
from node.shared_runner import RunnerKey, SharedRunner, runner_key
from node.stage_worker import SendFn, StageWorker
from node.store import Store
from node.wire.codes import Code
from node.wire.frames import Header
from node.wire.messages import Deploy, StageSpec
from node.wire.results import (
    ActivateResult,
    DeployResult,
    MemoryUse,
    RetireResult,
    StageMetrics,
)

log = logging.getLogger(__name__)
MAX_STAGES = 256  # stages loaded on one node, all deployments and epochs


@dataclass(frozen=True)
class ExecSettings:
    """How stages run: interpreter threads, XNNPACK, queue bound, gather time-out."""

    threads: int = 1
    tile_threads: int = 1
    xnnpack: bool = True
    queue_size: int = 8
    gather_timeout_s: float = 30.0
    memory_budget_bytes: int = 0  # 0: no limit


class Deployments:
    """Thread-safe registry of loaded stages; the data plane calls `dispatch`."""

    def __init__(self, node: str, store: Store, counters: Counters, settings: ExecSettings,
                 sender_factory: Callable[[], tuple[SendFn, Callable[[], None]]]) -> None:
        self.node, self.store, self.counters, self.settings = node, store, counters, settings
        self._sender_factory = sender_factory
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._deps: dict[str, dict[int, dict[str, StageWorker]]] = {}

    def deploy(self, cmd: Deploy) -> DeployResult:
        """Load every stage of cmd (all or nothing), then swap them in.

        With `cmd.reuse` a stage whose interpreter key matches one already loaded for
        the deployment shares it; the others are loaded only if the node's memory
        budget holds them next to everything already loaded (DeployError otherwise).
        """
        missing = sorted({s.part for s in cmd.stages if s.part and not self.store.has(s.part)})
        if missing:
            raise DeployError(f"deployment {cmd.deployment!r}: {len(missing)} part(s) not in "
                              f"the store: {', '.join(m[:12] for m in missing)}",
                              code=Code.MISSING_PARTS, details={"missing": missing})
        with self._load_lock:  # two deploys must not both count the same free memory
            self._check_stage_count(cmd)
            runners, reused = self._runners(cmd)
            stages: dict[str, StageWorker] = {}
            for spec in cmd.stages:
                stages[spec.id] = StageWorker(self.node, cmd.deployment, cmd.epoch, spec,
                                        runners.get(spec.id), self.counters,
                                        self._sender_factory, self.settings.queue_size,
                                        self.settings.gather_timeout_s)
            for st in stages.values():
                st.start()
            with self._lock:
                old = self._deps.setdefault(cmd.deployment, {}).get(cmd.epoch)
                self._deps[cmd.deployment][cmd.epoch] = stages
        for st in (old or {}).values():
            st.stop()
        loaded = sorted(sid for sid in runners if sid not in reused)
        log.info("deployed %s epoch %d: stages %s (%d loaded, %d reused); %s of %s in use",
                 cmd.deployment, cmd.epoch, sorted(stages), len(loaded), len(reused),
                 mib(self.in_use_bytes()), mib(self.settings.memory_budget_bytes))
        return DeployResult(cmd.deployment, cmd.epoch, tuple(sorted(stages)), tuple(loaded),
                            tuple(sorted(reused)), self.memory())

    def _runners(self, cmd: Deploy) -> tuple[dict[str, SharedRunner], set[str]]:
        """Stage id -> interpreter for cmd's stages (shared or new); the shared ids."""
        running = self._running(cmd.deployment) if cmd.reuse else {}
        keys: dict[str, RunnerKey] = {}
        # `tile_threads` is for several tile interpreters in this process (multi-threaded
        # ones thrash, docs/runtimes.md); a node's only tile runs with the board's `threads`,
        # as its op times were profiled (the planner scales those by the tile's MACs).
        tiles = sum(1 for s in cmd.stages if s.tile is not None and s.part)
        for spec in cmd.stages:
            threads = spec.threads or (self.settings.tile_threads if spec.tile and tiles > 1
                                       else self.settings.threads)
            key = runner_key(spec, threads, self.settings.xnnpack)
            if key is not None:
                keys[spec.id] = key
        specs = {s.id: s for s in cmd.stages}
        todo: dict[RunnerKey, StageSpec] = {}  # one new interpreter per key
        for sid, key in keys.items():
            if key not in running:
                todo.setdefault(key, specs[sid])
        models = {key: self._read(spec) for key, spec in todo.items()}
        need = {key: self._estimate(models[key], spec) for key, spec in todo.items()}
        forwards = sum(forward_bytes(s) for s in cmd.stages if s.part is None)
        new_bytes = sum(need.values()) + forwards
        shared = sum(r.need_bytes for key, r in running.items() if key in keys.values())
        replaced = self._forward_bytes(cmd.deployment, cmd.epoch)  # a redeployed epoch's
        self._check_budget(cmd, new_bytes - replaced, alone=new_bytes + shared
                           - self.in_use_bytes(cmd.deployment))
        fresh = {key: SharedRunner(self._load(models[key], spec, key), key, need[key])
                 for key, spec in todo.items()}
        runners = {sid: running.get(key) or fresh[key] for sid, key in keys.items()}
        return runners, {sid for sid, key in keys.items() if key in running}

    def _check_stage_count(self, cmd: Deploy) -> None:
        """DeployError (bad_stage) when the node would run more than MAX_STAGES stages
        (a thread each): forward stages cost little memory, but threads run out."""
        with self._lock:
            kept = sum(len(ss) for d, eps in self._deps.items() for e, ss in eps.items()
                       if (d, e) != (cmd.deployment, cmd.epoch))
        if kept + len(cmd.stages) > MAX_STAGES:
            raise DeployError(f"node {self.node!r}: {kept} stages loaded, {len(cmd.stages)} "
                              f"more would exceed {MAX_STAGES}", code=Code.BAD_STAGE)

    def _running(self, deployment: str) -> dict[RunnerKey, SharedRunner]:
        """Interpreters loaded for `deployment` (any epoch), by key."""
        with self._lock:
            eps = self._deps.get(deployment, {})
            return {st.runner.key: st.runner for ss in eps.values() for st in ss.values()
                    if isinstance(st.runner, SharedRunner)}

    def _read(self, spec: StageSpec) -> bytes:
        try:
            return self.store.read_verified(spec.part or "")
        except StoreError as exc:
            raise DeployError(str(exc), code=exc.code, details={"missing": [spec.part]}) from None

    def _estimate(self, model: bytes, spec: StageSpec) -> int:
        try:
            return stage_bytes(model, spec)
        except Exception as exc:  # a part the runtime cannot read
            raise DeployError(f"stage {spec.id!r}: part {(spec.part or '')[:12]} does not "
                              f"load: {exc}", code=Code.BAD_PART) from None

    def _load(self, model: bytes, spec: StageSpec, key: RunnerKey) -> PartRunner:
        try:
            return PartRunner(model, spec, RuntimeSettings(key.threads, key.xnnpack))
        except DeployError:
            raise
        except Exception as exc:
            raise DeployError(f"stage {spec.id!r}: part {key.part[:12]} does not load: {exc}",
                              code=Code.BAD_PART) from None

    def _check_budget(self, cmd: Deploy, need: int, alone: int) -> None:
        """DeployError (memory_budget) when `need` more bytes would exceed the budget.

        `alone`: how the bytes in use would change if the deployment's older epochs
        were dropped first and the new one loaded in full; the reply says whether that
        would fit (`fits_without_older_epochs`), so the planner knows whether dropping
        them first (break before make) helps.
        """
        budget = self.settings.memory_budget_bytes
        used = self.in_use_bytes()
        if budget and need and used + need > budget:
            raise DeployError(
                f"node {self.node!r}: memory budget {mib(budget)} exceeded: deployment "
                f"{cmd.deployment!r} epoch {cmd.epoch} needs {mib(need)} (parts + arenas) "
                f"with {mib(used)} already in use", code=Code.MEMORY_BUDGET,
                details={"budget_bytes": budget, "need_bytes": need, "in_use_bytes": used,
                         "fits_without_older_epochs": used + alone <= budget})

    def in_use_bytes(self, deployment: str | None = None) -> int:
        """Estimated bytes of every interpreter loaded (shared ones counted once) and
        forward stage, or of those of one deployment."""
        with self._lock:
            runners = {id(st.runner): st.runner for d, eps in self._deps.items()
                       if deployment is None or d == deployment
                       for ss in eps.values() for st in ss.values()
                       if isinstance(st.runner, SharedRunner)}
        return sum(r.need_bytes for r in runners.values()) + self._forward_bytes(deployment)

    def _forward_bytes(self, deployment: str | None = None, epoch: int | None = None) -> int:
        """Estimated bytes of the forward stages loaded (of one deployment or epoch)."""
        with self._lock:
            specs = [st.spec for d, eps in self._deps.items()
                     if deployment is None or d == deployment
                     for e, ss in eps.items() if epoch is None or e == epoch
                     for st in ss.values() if st.runner is None]
        return sum(forward_bytes(s) for s in specs)

    def memory(self) -> MemoryUse:
        """The budget (0: none) and the estimated bytes in use."""
        return MemoryUse(self.settings.memory_budget_bytes, self.in_use_bytes())

    def _drop(self, deployment: str, epochs: list[int]) -> list[int]:
        with self._lock:
            eps = self._deps.get(deployment)
            if eps is None:
                raise DeployError(f"unknown deployment {deployment!r}",
                                  code=Code.UNKNOWN_DEPLOYMENT)
            dropped = [e for e in epochs if e in eps]
            stages = [st for e in dropped for st in eps.pop(e).values()]
            if not eps:
                del self._deps[deployment]
        for st in stages:
            st.stop()
        return dropped

    def undeploy(self, deployment: str) -> RetireResult:
        with self._lock:
            epochs = list(self._deps.get(deployment, {}))
        return RetireResult(deployment, tuple(self._drop(deployment, epochs)))

    def activate(self, deployment: str, epoch: int) -> ActivateResult:
        """Keep `epoch` (which must be loaded) and drop every older one."""
        with self._lock:
            eps = self._deps.get(deployment, {})
            if epoch not in eps:
                raise DeployError(f"deployment {deployment!r} has no epoch {epoch} "
                                  f"(loaded: {sorted(eps)})", code=Code.UNKNOWN_EPOCH)
            older = [e for e in eps if e < epoch]
        return ActivateResult(deployment, epoch, tuple(self._drop(deployment, older)))

    def retire(self, deployment: str, epochs: tuple[int, ...]) -> RetireResult:
        return RetireResult(deployment, tuple(self._drop(deployment, list(epochs))))

    def dispatch(self, header: Header, arrays: list[np.ndarray], inline: SendFn | None = None
                 ) -> bool:
        """Queue a data message at its stage; False if that queue is full."""
        if header.kind != "data":
            raise DeployError(f"a node accepts data messages, not {header.kind!r}",
                              code=Code.BAD_KIND)
        eps = self._deps.get(header.deployment)  # dict reads are atomic under the GIL
        if eps is None:
            raise DeployError(f"unknown deployment {header.deployment!r}",
                              code=Code.UNKNOWN_DEPLOYMENT)
        stages = eps.get(header.epoch)
        if stages is None:
            raise DeployError(f"deployment {header.deployment!r} has no epoch {header.epoch} "
                              f"(loaded: {sorted(eps)})", code=Code.UNKNOWN_EPOCH)
        stage = stages.get(header.stage)
        if stage is None:
            raise DeployError(f"deployment {header.deployment!r} epoch {header.epoch} has no "
                              f"stage {header.stage!r} on this node", code=Code.UNKNOWN_STAGE)
        return stage.offer(header, arrays, inline)

    def summary(self) -> dict[str, dict[int, list[str]]]:
        with self._lock:
            return {d: {e: sorted(s) for e, s in eps.items()} for d, eps in self._deps.items()}

    def snapshot(self) -> dict[str, StageMetrics]:
        """Per-stage metrics keyed "deployment/epoch/stage"."""
        with self._lock:
            items = [(f"{d}/{e}/{sid}", st) for d, eps in self._deps.items()
                     for e, ss in eps.items() for sid, st in ss.items()]
        return {k: st.snapshot() for k, st in items}

    def stop(self) -> None:
        with self._lock:
            stages = [st for eps in self._deps.values() for ss in eps.values()
                      for st in ss.values()]
            self._deps.clear()
        for st in stages:
            st.stop()
