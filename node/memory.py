"""What a stage costs in memory before it is loaded: the part's bytes plus its arena.

The arena estimate walks the interpreter's ops in execution order and takes the peak of
the activation bytes live at once (the tensors an op reads or writes that no op produced
and that are not graph inputs are constants: they live in the part's bytes). It is the
same rule as the planner's cost model (weights + peak live activations), so a plan the
planner fits within a node's budget is not refused by the node. The interpreter used
for it is built without delegates and never allocated: cheap, and nothing is touched.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from node.runtime import RuntimeSettings, make_interpreter
from node.wire.messages import StageSpec

log = logging.getLogger(__name__)
MIB = 1 << 20


def _nbytes(d: dict[str, Any]) -> int:
    return (
        int(np.prod([int(x) for x in d["shape"]], dtype=np.int64)) * np.dtype(d["dtype"]).itemsize
    )


def arena_bytes(interp: Any) -> int:
    """Peak bytes of activations live at once in an (unallocated) interpreter."""
    size = {d["index"]: _nbytes(d) for d in interp.get_tensor_details()}
    try:
        ops = interp._get_ops_details()  # both runtimes have it; it is not public API
    except AttributeError:
        log.debug("no op details in this runtime: counting every tensor")
        return sum(size.values())
    inputs = [d["index"] for d in interp.get_input_details()]
    outputs = {d["index"] for d in interp.get_output_details()}
    last_use: dict[int, int] = {}
    for k, op in enumerate(ops):
        for t in op["inputs"]:
            if t >= 0:
                last_use[t] = k
    live = set(inputs)
    peak = sum(size.get(t, 0) for t in live)
    for k, op in enumerate(ops):
        live.update(t for t in op["outputs"] if t >= 0)
        peak = max(peak, sum(size.get(t, 0) for t in live))
        live = {t for t in live if t in outputs or last_use.get(t, -1) > k}
    return peak


def window_share(spec: StageSpec) -> float:
    """Share of the full activations a tile stage holds (its input window's area)."""
    if spec.tile is None or not spec.inputs or len(spec.inputs[0].shape) != 4:
        return 1.0
    _, h, w, _ = spec.inputs[0].shape
    y0, y1, x0, x1 = spec.tile.input_region
    return min(1.0, (y1 - y0) * (x1 - x0) / max(1, h * w))


def stage_bytes(model: bytes, spec: StageSpec) -> int:
    """Estimated resident bytes of one loaded stage: part bytes + its (tile's) arena."""
    interp = make_interpreter(model, RuntimeSettings(threads=1, xnnpack=False))
    return len(model) + int(arena_bytes(interp) * window_share(spec))


STAGE_BYTES = 128 << 10  # a stage's own cost: its worker thread, queue and sockets


def forward_bytes(spec: StageSpec) -> int:
    """Estimated bytes of a forward stage (no part): the stage itself plus the whole
    tensors it gathers from pieces (an input in one piece is a view of the received
    message). Counted against the budget like a part, so forward stages cannot pile up
    outside it."""
    return STAGE_BYTES + sum(math.prod(i.shape) * np.dtype(i.dtype).itemsize
                             for i in spec.inputs if i.pieces > 1)


def mib(n: int) -> str:
    """Bytes as MiB with one decimal, for one-line messages."""
    return f"{n / MIB:.1f} MiB"
