"""Shared helpers for the cut/slice/verify tests: small cached models and chain runs.

Every interpreter comes from node.runtime, so these tests run under whichever runtime
it picks (ai-edge-litert by default; TILEFLEET_RUNTIME=tflite_runtime in the numpy<2
CI step). References are computed with the same RuntimeSettings as the parts.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from node.runtime import RuntimeSettings, run_whole
from planner.model.cut import Part, folds_constants
from planner.model.graph import ModelGraph
from planner.model.verify import model_inputs, run_parts
from planner.modelbuild import recipes
from planner.modelbuild.randomdag import random_dag

# Small versions (32-64 px, narrow) of every architecture the builder knows.
RECIPES = {
    "mobilenet": lambda dt, **kw: recipes.mobilenet_v2_like(32, 0.35, 10, dtype=dt, **kw),
    "resnet": lambda dt, **kw: recipes.resnet_like(32, 18, 0.25, 10, dtype=dt, **kw),
    "vgg": lambda dt, **kw: recipes.vgg_like(32, 0.125, 10, 64, dtype=dt, **kw),
    "yolo": lambda dt, **kw: recipes.yolo_like(64, 0.25, 4, dtype=dt, **kw),
    "early_exit": lambda dt, **kw: recipes.early_exit_like(32, 0.5, 10, dtype=dt, **kw),
    "dag0": lambda dt, **kw: random_dag(0, 12, 16, 8, dtype=dt, **kw),
    "dag3": lambda dt, **kw: random_dag(3, 14, 16, 8, dtype=dt, **kw),
    "dag7": lambda dt, **kw: random_dag(7, 16, 16, 8, dtype=dt, **kw),
}
SETTINGS = {"xnnpack": RuntimeSettings(threads=1, xnnpack=True),
            "builtin": RuntimeSettings(threads=1, xnnpack=False)}


@cache
def model_bytes(name: str, dtype: str, **options) -> bytes:
    """A recipe model, built once per session (options: fp16_weights, signature, ...)."""
    return RECIPES[name](dtype, **options)


@cache
def graph_of(name: str, dtype: str, **options) -> ModelGraph:
    """The ModelGraph of a cached recipe model."""
    return ModelGraph(model_bytes(name, dtype, **options), f"{name}-{dtype}")


def compute_ops(graph: ModelGraph) -> list[int]:
    """Ops that compute activations: a cut before any of them but the first is valid."""
    return [op.index for op in graph.ops if not folds_constants(graph, op.index)]


def inputs_for(graph: ModelGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random model inputs by name (int8 inputs get random int8 values)."""
    return model_inputs(graph, seed)


_REFS: dict = {}


def reference(graph: ModelGraph, settings: RuntimeSettings, seed: int = 0) -> dict[str, np.ndarray]:
    """Whole-model outputs by unique name under `settings`, cached."""
    key = (id(graph), settings, seed)
    if key not in _REFS:
        outs = run_whole(graph.data, list(inputs_for(graph, seed).values()), settings)
        _REFS[key] = (
            {graph.tensors[t].name: y for t, y in zip(graph.outputs, outs, strict=True)},
            graph,
        )
    return _REFS[key][0]


def assert_chain_exact(graph: ModelGraph, parts: list[Part], settings: RuntimeSettings) -> None:
    """Run the parts by name and require every model output to be bit-identical."""
    env = run_parts(parts, inputs_for(graph), settings)
    for name, want in reference(graph, settings).items():
        got = env[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.array_equal(got, want), (
            f"{name}: max abs diff {np.max(np.abs(got.astype(float) - want))}"
        )
