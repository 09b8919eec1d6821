"""Property tests of the model builder on random DAGs, and of its numpy reference forward."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.runtime import RuntimeSettings, run_whole
from planner.modelbuild import (
    conv_stack_graph,
    random_dag_graph,
    run_float,
    sample_floats_for,
    sample_inputs,
    yolo_like_graph,
)
from planner.modelbuild.reference import forward
from planner.modelbuild.weights import generate_weights

NON_TILEABLE = {"fully_connected", "mean", "reshape", "softmax"}
dags = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "n_ops": st.integers(1, 24),
        "input_size": st.tuples(st.integers(4, 33), st.integers(4, 33)),
        "channels": st.integers(1, 12),
        "tileable_only": st.booleans(),
    }
)


@settings(max_examples=25, deadline=None)
@given(dags)
def test_random_dag_builds_and_runs_in_both_dtypes(params):
    g = random_dag_graph(**params)
    ir = g.ir
    assert len(ir.ops) >= params["n_ops"]
    consumed = {t for op in ir.ops for t in op.inputs}
    assert ir.outputs and not consumed & set(ir.outputs)  # every output is a leaf
    if params["tileable_only"]:
        assert not {op.kind for op in ir.ops} & NON_TILEABLE
    seed = params["seed"]
    float_model = g.build("float32", seed)
    int8_model = g.build("int8", seed, io="float" if seed % 2 else "int8")
    x = sample_floats_for(float_model, 1)
    for model in (float_model, int8_model):
        for rt in (RuntimeSettings(xnnpack=True), RuntimeSettings(xnnpack=False)):
            for y in run_float(model, x, rt):
                assert np.isfinite(y).all()


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_random_dag_is_a_function_of_its_seed(seed):
    a, b = random_dag_graph(seed, 12), random_dag_graph(seed, 12)
    assert [op.kind for op in a.ir.ops] == [op.kind for op in b.ir.ops]
    assert a.build("float32", seed) == b.build("float32", seed)


@pytest.mark.parametrize(
    "graph",
    [conv_stack_graph((37, 29)), yolo_like_graph(64, 0.25, 3)]
    + [random_dag_graph(s, 20, (15, 22)) for s in range(4)],
    ids=lambda g: g.ir.name,
)
def test_reference_forward_matches_the_float_interpreter(graph):
    model = graph.build("float32", seed=5)
    x = sample_inputs(model, 2)
    ref = forward(graph.ir, generate_weights(graph.ir, 5), x)
    outs = run_whole(model, x, RuntimeSettings(xnnpack=False))
    for y, t in zip(outs, graph.ir.outputs, strict=True):
        np.testing.assert_allclose(y, ref[t], rtol=1e-4, atol=1e-4 * np.abs(ref[t]).max())
