"""Run one part with the TFLite runtime, on whole tensors or on one spatial tile.

A tile stage runs through `node.tile_exec.TileRunner`: each input resized to its own
window of the tile (node/wire/regions.py TileSpec), invoke, each output's halo cropped.
Tile stages get one interpreter thread unless the stage asks otherwise (several
multi-threaded interpreters thrash: docs/runtimes.md).
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
        if spec.tile is not None:
            self.interp = None  # only read for its tensor details; TileRunner owns its own
            t = spec.tile
            # one window per input and one crop per output (part order); a spec naming one
            # for a part of several applies it to every tensor (the older, single form)
            regions = t.input_regions if len(t.input_regions) == len(ins) else \
                t.input_regions * len(ins) if len(t.input_regions) == 1 else None
            self._crops = t.crops if len(t.crops) == len(outs) else \
                t.crops * len(outs) if len(t.crops) == 1 else None
            if regions is None or self._crops is None:
                raise DeployError(f"stage {spec.id!r}: the tile has {len(t.input_regions)} input "
                                  f"regions and {len(t.crops)} crops for a part of {len(ins)} "
                                  f"inputs and {len(outs)} outputs", code=Code.BAD_STAGE)
            shapes = [(wanted[n].shape[0], r[1] - r[0], r[3] - r[2], *wanted[n].shape[3:])
                      for n, r in zip(ins, regions, strict=True)]
            self.tile_runner = TileRunner(model if isinstance(model, bytes) else str(model),
                                          settings, shapes)
            self.crop = t.crop
            return
        self.interp.allocate_tensors()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Set inputs by name, invoke, return outputs by name (cropped for a tile)."""
        t = time.perf_counter()
        out = self._run(inputs)
        pacing.pad(time.perf_counter() - t)  # --emulate-speed: the stage takes 1/F as long
        return out

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.tile_runner is not None:
            tr = self.tile_runner
            outs = tr.run_all([inputs[n] for n in tr.input_names], self._crops)
            return dict(zip(tr.output_names, outs, strict=True))
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
