"""Deployments on this node: deployment -> epoch -> stage id -> Stage.

A deploy for a new (or higher) epoch loads its stages next to the old ones; messages
run with the stages of the epoch they carry until `activate`/`retire` drops old epochs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from node.errors import DeployError, StoreError
from node.executor import SendFn, Stage
from node.metrics import Counters
from node.runner import PartRunner
from node.runtime import RuntimeSettings
from node.store import Store
from node.wire.frames import Header
from node.wire.messages import Deploy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecSettings:
    """How stages run: interpreter threads, XNNPACK, queue bound, gather time-out."""

    threads: int = 1
    tile_threads: int = 1
    xnnpack: bool = True
    queue_size: int = 8
    gather_timeout_s: float = 30.0


class Deployments:
    """Thread-safe registry of loaded stages; the data plane calls `dispatch`."""

    def __init__(self, node: str, store: Store, counters: Counters, settings: ExecSettings,
                 sender_factory: Callable[[], tuple[SendFn, Callable[[], None]]]) -> None:
        self.node, self.store, self.counters, self.settings = node, store, counters, settings
        self._sender_factory = sender_factory
        self._lock = threading.Lock()
        self._deps: dict[str, dict[int, dict[str, Stage]]] = {}

    def deploy(self, cmd: Deploy) -> dict[str, Any]:
        """Load every stage of cmd (all or nothing), then swap them in."""
        missing = sorted({s.part for s in cmd.stages if s.part and not self.store.has(s.part)})
        if missing:
            raise DeployError(f"deployment {cmd.deployment!r}: {len(missing)} part(s) not in "
                              f"the store: {', '.join(m[:12] for m in missing)}",
                              code="missing_parts", details={"missing": missing})
        stages: dict[str, Stage] = {}
        for spec in cmd.stages:
            runner = None
            if spec.part is not None:
                try:
                    model = self.store.read_verified(spec.part)
                except StoreError as exc:
                    raise DeployError(str(exc), code=exc.code,
                                      details={"missing": [spec.part]}) from None
                threads = spec.threads or (self.settings.tile_threads if spec.tile
                                           else self.settings.threads)
                try:
                    runner = PartRunner(model, spec, RuntimeSettings(threads,
                                                                     self.settings.xnnpack))
                except DeployError:
                    raise
                except Exception as exc:
                    raise DeployError(f"stage {spec.id!r}: part {spec.part[:12]} does not load: "
                                      f"{exc}", code="bad_part") from None
            stages[spec.id] = Stage(self.node, cmd.deployment, cmd.epoch, spec, runner,
                                    self.counters, self._sender_factory,
                                    self.settings.queue_size, self.settings.gather_timeout_s)
        for st in stages.values():
            st.start()
        with self._lock:
            old = self._deps.setdefault(cmd.deployment, {}).get(cmd.epoch)
            self._deps[cmd.deployment][cmd.epoch] = stages
        for st in (old or {}).values():
            st.stop()
        log.info("deployed %s epoch %d: stages %s", cmd.deployment, cmd.epoch, sorted(stages))
        return {"deployment": cmd.deployment, "epoch": cmd.epoch, "stages": sorted(stages)}

    def _drop(self, deployment: str, epochs: list[int]) -> list[int]:
        with self._lock:
            eps = self._deps.get(deployment)
            if eps is None:
                raise DeployError(f"unknown deployment {deployment!r}",
                                  code="unknown_deployment")
            dropped = [e for e in epochs if e in eps]
            stages = [st for e in dropped for st in eps.pop(e).values()]
            if not eps:
                del self._deps[deployment]
        for st in stages:
            st.stop()
        return dropped

    def undeploy(self, deployment: str) -> dict[str, Any]:
        with self._lock:
            epochs = list(self._deps.get(deployment, {}))
        return {"deployment": deployment, "retired": self._drop(deployment, epochs)}

    def activate(self, deployment: str, epoch: int) -> dict[str, Any]:
        """Keep `epoch` (which must be loaded) and drop every older one."""
        with self._lock:
            eps = self._deps.get(deployment, {})
            if epoch not in eps:
                raise DeployError(f"deployment {deployment!r} has no epoch {epoch} "
                                  f"(loaded: {sorted(eps)})", code="unknown_epoch")
            older = [e for e in eps if e < epoch]
        return {"deployment": deployment, "epoch": epoch,
                "retired": self._drop(deployment, older)}

    def retire(self, deployment: str, epochs: tuple[int, ...]) -> dict[str, Any]:
        return {"deployment": deployment, "retired": self._drop(deployment, list(epochs))}

    def dispatch(self, header: Header, arrays: list[np.ndarray], inline: SendFn | None = None
                 ) -> bool:
        """Queue a data message at its stage; False if that queue is full."""
        if header.kind != "data":
            raise DeployError(f"a node accepts data messages, not {header.kind!r}",
                              code="bad_kind")
        eps = self._deps.get(header.deployment)  # dict reads are atomic under the GIL
        if eps is None:
            raise DeployError(f"unknown deployment {header.deployment!r}",
                              code="unknown_deployment")
        stages = eps.get(header.epoch)
        if stages is None:
            raise DeployError(f"deployment {header.deployment!r} has no epoch {header.epoch} "
                              f"(loaded: {sorted(eps)})", code="unknown_epoch")
        stage = stages.get(header.stage)
        if stage is None:
            raise DeployError(f"deployment {header.deployment!r} epoch {header.epoch} has no "
                              f"stage {header.stage!r} on this node", code="unknown_stage")
        return stage.offer(header, arrays, inline)

    def summary(self) -> dict[str, dict[int, list[str]]]:
        with self._lock:
            return {d: {e: sorted(s) for e, s in eps.items()} for d, eps in self._deps.items()}

    def snapshot(self) -> dict[str, Any]:
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
