"""Chains of parts are bit-identical to the whole model (np.array_equal), every recipe,
float32 and int8, XNNPACK on and off, under the runtime node/runtime.py picks."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.model.cut import cut_at
from tests.planner.cutkit import SETTINGS, assert_chain_exact, compute_ops, graph_of

MODELS = ["mobilenet", "resnet", "vgg", "yolo", "early_exit", "dag0", "dag3", "dag7"]


@st.composite
def chains(draw, graph):
    """1-4 cut points, each before a compute op, so every part computes something."""
    candidates = compute_ops(graph)[1:]
    k = draw(st.integers(1, min(4, len(candidates))))
    return sorted(draw(st.lists(st.sampled_from(candidates), min_size=k, max_size=k, unique=True)))


@pytest.mark.parametrize("mode", sorted(SETTINGS))
@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("name", MODELS)
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_chains_are_exact(name: str, dtype: str, mode: str, data) -> None:
    graph = graph_of(name, dtype)
    points = data.draw(chains(graph), label="points")
    assert_chain_exact(graph, cut_at(graph, points), SETTINGS[mode])


VARIANTS = [
    ("mobilenet", "float32", {"fp16_weights": True}),
    ("resnet", "float32", {"fp16_weights": True}),
    ("yolo", "float32", {"signature": True, "metadata": True}),
    ("resnet", "int8", {"signature": True, "metadata": True}),
    ("early_exit", "float32", {"duplicate_names": True}),
    ("mobilenet", "int8", {"duplicate_names": True}),
    ("mobilenet", "int8", {"io": "float"}),
    ("dag3", "float32", {"fp16_weights": True, "duplicate_names": True}),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}-{'-'.join(v[2])}")
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_builder_variants_are_exact(variant, data) -> None:
    name, dtype, options = variant
    graph = graph_of(name, dtype, **options)
    points = data.draw(chains(graph), label="points")
    mode = data.draw(st.sampled_from(sorted(SETTINGS)), label="mode")
    assert_chain_exact(graph, cut_at(graph, points), SETTINGS[mode])


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("name", ["resnet", "mobilenet"])
def test_every_single_cut_residuals_included(name: str, dtype: str) -> None:
    """Cut before every compute op; cuts inside residual blocks cross 2+ tensors."""
    graph = graph_of(name, dtype)
    widest = 0
    for p in compute_ops(graph)[1:]:
        parts = cut_at(graph, [p])
        assert set(parts[0].output_names) == set(parts[1].input_names)
        assert len(parts[1].inputs) == len(graph.live_at(p))
        widest = max(widest, len(parts[1].inputs))
        assert_chain_exact(graph, parts, SETTINGS["xnnpack"])
    assert widest >= 2


def _tflite_runtime_importable() -> str | None:
    try:
        importlib.import_module("tflite_runtime.interpreter")
    except Exception as exc:  # ImportError, or "_ARRAY_API not found" under numpy 2
        return f"tflite_runtime not importable here ({type(exc).__name__}: {str(exc)[:80]})"
    return None


@pytest.mark.runtime
def test_chain_exact_under_tflite_runtime() -> None:
    """The same exactness check in a process forced onto tflite_runtime."""
    reason = _tflite_runtime_importable()
    if reason:
        pytest.skip(reason)
    code = (
        "from planner.model.cut import cut_at\n"
        "from tests.planner.cutkit import SETTINGS, assert_chain_exact, compute_ops, graph_of\n"
        "for name in ('mobilenet', 'yolo'):\n"
        "  for dt in ('float32', 'int8'):\n"
        "    g = graph_of(name, dt); c = compute_ops(g)\n"
        "    for mode in SETTINGS:\n"
        "      assert_chain_exact(g, cut_at(g, [c[len(c) // 3], c[2 * len(c) // 3]]), "
        "SETTINGS[mode])\n"
        "from node.runtime import runtime_name; assert runtime_name() == 'tflite_runtime'\n"
    )
    env = {**os.environ, "TILEFLEET_RUNTIME": "tflite_runtime"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
