"""Run one part with the TFLite runtime, on whole tensors or on one spatial tile.

A tile stage of a one-input, one-output part runs through `node.tile_exec.TileRunner`
(resize to the tile's input window, invoke, crop the halo); a tile stage with several
inputs resizes them all once at load time. Tile stages get one interpreter thread
unless the stage asks otherwise (several multi-threaded interpreters thrash: docs/runtimes.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from node import pacing
from node.errors import DeployError
from node.runtime import RuntimeSettings, make_interpreter
from node.tile_exec import TileRunner
from node.wire.codes import Code
from node.wire.frames import Region
from node.wire.messages import StageSpec

log = logging.getLogger(__name__)


class PartRunner:
    """An allocated interpreter for one stage; `run` maps input names to output arrays."""

    def __init__(self, model: str | Path | bytes, spec: StageSpec, settings: RuntimeSettings
                 ) -> None:
        self.spec = spec
        self.interp: Any = make_interpreter(model if isinstance(model, bytes) else str(model),
                                            settings)
        ins = {d["name"]: d for d in self.interp.get_input_details()}
        outs = self.interp.get_output_details()
        wanted = {i.name: i for i in spec.inputs}
        missing = sorted(set(ins) - set(wanted))
        extra = sorted(set(wanted) - set(ins))
        if missing or extra:
            raise DeployError(f"stage {spec.id!r}: part inputs {sorted(ins)} do not match "
                              f"the stage inputs {sorted(wanted)}", code=Code.BAD_STAGE)
        for name, d in ins.items():
            w = wanted[name]
            if tuple(int(x) for x in d["shape"]) != w.shape or np.dtype(d["dtype"]).name != w.dtype:
                raise DeployError(f"stage {spec.id!r}: input {name!r} is "
                                  f"{np.dtype(d['dtype']).name}{list(d['shape'])} in the part, "
                                  f"{w.dtype}{list(w.shape)} in the spec", code=Code.BAD_STAGE)
        self.in_index = {n: d["index"] for n, d in ins.items()}
        self.out_index = {d["name"]: d["index"] for d in outs}
        # full (untiled) output shapes, read before any resize
        self.out_shapes = {d["name"]: tuple(int(x) for x in d["shape"]) for d in outs}
        self.out_dtypes = {d["name"]: np.dtype(d["dtype"]).name for d in outs}
        self.crop: Region | None = None
        self.tile_runner: TileRunner | None = None
        if spec.tile is not None and len(ins) == 1 and len(outs) == 1:
            self.interp = None  # only read for its tensor details; TileRunner owns its own
            y0, y1, x0, x1 = spec.tile.input_region
            n, _, _, c = wanted[next(iter(ins))].shape
            self.tile_runner = TileRunner(model if isinstance(model, bytes) else str(model),
                                          settings, (n, y1 - y0, x1 - x0, c))
            self.crop = spec.tile.crop
            self._tile_io = (next(iter(ins)), outs[0]["name"])
            return
        if spec.tile is not None:
            y0, y1, x0, x1 = spec.tile.input_region
            for name, idx in self.in_index.items():
                n, _, _, c = wanted[name].shape
                self.interp.resize_tensor_input(idx, [n, y1 - y0, x1 - x0, c], strict=False)
            self.crop = spec.tile.crop
        self.interp.allocate_tensors()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set inputs by name, invoke, return outputs by name (cropped for a tile)."""
        t = time.perf_counter()
        out = self._run(inputs)
        pacing.pad(time.perf_counter() - t)  # --emulate-speed: the stage takes 1/F as long
        return out

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.tile_runner is not None:
            i, o = self._tile_io
            return {o: self.tile_runner.run(inputs[i], self.crop)}  # type: ignore[arg-type]
        for name, idx in self.in_index.items():
            self.interp.set_tensor(idx, inputs[name])
        self.interp.invoke()
        return {name: self._get(idx) for name, idx in self.out_index.items()}

    def _get(self, idx: int) -> np.ndarray:
        # one copy out of the interpreter, straight into a zmq message (get_tensor would
        # copy into numpy memory that pyzmq can only send through its garbage-collector
        # thread); a cropped tile output is not contiguous and is copied by numpy instead
        view = self.interp.tensor(idx)()
        if self.crop is not None:
            y0, y1, x0, x1 = self.crop
            view = view[:, y0:y1, x0:x1, :]
        if not view.flags.c_contiguous or view.nbytes == 0:
            return np.array(view)  # a copy always (ascontiguousarray returns an empty view)
        # zmq.Frame keeps the object it copied from: hand it a memoryview released right
        # after the copy, else the frame (held by whoever got the output, e.g. the next
        # stage of this node) pins the runtime's buffer and the next invoke is refused
        mv = memoryview(view)
        try:
            f = zmq.Frame(mv, copy=True)
        finally:
            mv.release()
        return np.frombuffer(f.buffer, dtype=view.dtype).reshape(view.shape)
