"""The local single-interpreter reference that fleet results are compared with."""

from __future__ import annotations

from typing import Any

import numpy as np

from node.runtime import RuntimeSettings, make_interpreter


class LocalModel:
    """One allocated interpreter of a whole model; `run` maps input names to outputs.

    Same runtime configuration as the nodes' stages (XNNPACK, 1 thread by default), so
    a correct distributed run is bit-identical to it (docs/runtimes.md).
    """

    def __init__(self, model: bytes, settings: RuntimeSettings | None = None) -> None:
        self.interp: Any = make_interpreter(model, settings or RuntimeSettings())
        self.interp.allocate_tensors()
        self.inputs = {d["name"]: d for d in self.interp.get_input_details()}
        self.outputs = {d["name"]: d for d in self.interp.get_output_details()}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, d in self.inputs.items():
            self.interp.set_tensor(d["index"], inputs[name])
        self.interp.invoke()
        return {name: self.interp.get_tensor(d["index"]).copy()
                for name, d in self.outputs.items()}


def random_inputs(specs: list[dict[str, Any]], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for a model's input specs (name, shape, dtype)."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in specs:
        dt = np.dtype(t["dtype"])
        shape = tuple(t["shape"])
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            out[t["name"]] = rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dt)
        else:
            out[t["name"]] = rng.uniform(-1.0, 1.0, size=shape).astype(dt)
    return out


def mismatches(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> list[str]:
    """Names of outputs that are not bit-identical (missing ones included)."""
    return [n for n, w in want.items() if n not in got or not np.array_equal(got[n], w)]
