"""An interpreter shared by the stages of successive epochs of one deployment.

A re-plan usually leaves most stages as they were: same part, same tile, same node.
The new epoch's Stage (its routes, epoch and queue) is new, but its interpreter is the
one already running: both epochs' workers call `run`, one at a time, until the old
epoch is retired, and the interpreter is freed when no stage holds it any more.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from node.runner import PartRunner
from node.wire.messages import StageSpec, TileSpec


class RunnerKey(NamedTuple):
    """What makes two stages' interpreters interchangeable (bit for bit)."""

    part: str
    tile: TileSpec | None
    threads: int
    xnnpack: bool


def runner_key(spec: StageSpec, threads: int, xnnpack: bool) -> RunnerKey | None:
    """The key of a stage's interpreter; None for a forward stage (no part)."""
    return None if spec.part is None else RunnerKey(spec.part, spec.tile, threads, xnnpack)


class SharedRunner:
    """A PartRunner with a lock: stages of several epochs may call `run` concurrently.

    `run` returns copies (PartRunner and TileRunner copy outputs out of the
    interpreter), so holding the lock for the call alone is enough.
    """

    def __init__(self, runner: PartRunner, key: RunnerKey, need_bytes: int) -> None:
        self._runner = runner
        self._lock = threading.Lock()
        self.key, self.need_bytes = key, need_bytes
        self.out_shapes = runner.out_shapes
        self.out_dtypes = runner.out_dtypes

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            return self._runner.run(inputs)
