"""node.tile_exec: slicing, running one resized interpreter per tile, stitching."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import node.tile_exec
from node.runtime import RuntimeSettings, run_whole
from node.tile_exec import TileRunner, slice_region, stitch
from planner.modelbuild import GraphBuilder


def _model(dtype: str = "float32", outputs: int = 1) -> bytes:
    g = GraphBuilder()
    x = g.conv2d(g.input([1, 12, 10, 3]), 4, 3, activation="RELU")
    y = g.depthwise_conv2d(x, 3)
    g.output(*([y] if outputs == 1 else [x, y]))
    return g.build(dtype)


def test_node_side_stays_free_of_planner() -> None:
    tree = ast.parse(Path(node.tile_exec.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.split(".")[0] == "planner" for m in imported)


def test_slice_region() -> None:
    x = np.arange(2 * 5 * 6 * 3).reshape(2, 5, 6, 3)
    s = slice_region(x, (1, 4, 2, 6))
    assert s.shape == (2, 3, 4, 3) and s.flags.c_contiguous
    assert np.array_equal(s, x[:, 1:4, 2:6])
    for bad in [(0, 6, 0, 1), (3, 3, 0, 1), (-1, 2, 0, 1), (0, 1, 0)]:
        with pytest.raises(ValueError):
            slice_region(x, bad)
    with pytest.raises(ValueError, match="NHWC"):
        slice_region(x[0], (0, 1, 0, 1))


def test_stitch_checks_coverage() -> None:
    full = np.random.default_rng(0).standard_normal((1, 4, 5, 2)).astype(np.float32)
    regions = [(0, 2, 0, 5), (2, 4, 0, 3), (2, 4, 3, 5)]
    pieces = [(r, full[:, r[0]:r[1], r[2]:r[3]]) for r in regions]
    assert np.array_equal(stitch(full.shape, np.float32, pieces), full)
    with pytest.raises(ValueError, match="1 uncovered"):
        stitch(full.shape, np.float32, pieces[:2] + [((2, 3, 3, 5), full[:, 2:3, 3:5]),
                                                     ((3, 4, 3, 4), full[:, 3:4, 3:4])])
    with pytest.raises(ValueError, match="covered 2 times"):
        stitch(full.shape, np.float32, pieces + [((0, 1, 0, 1), full[:, :1, :1])])
    with pytest.raises(ValueError, match="expected float32"):
        stitch(full.shape, np.float32, [((0, 4, 0, 5), full[:, :, :4])])
    with pytest.raises(ValueError, match="expected float32"):
        stitch(full.shape, np.float32, [((0, 4, 0, 5), full.astype(np.float64))])
    with pytest.raises(ValueError, match="outside"):
        stitch(full.shape, np.float32, [((0, 5, 0, 5), full)])


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_runner_resizes_only_on_shape_change(dtype: str) -> None:
    data = _model(dtype)
    runner = TileRunner(data, RuntimeSettings())
    calls = []
    allocate = runner._interp.allocate_tensors
    runner._interp.allocate_tensors = lambda: (calls.append(1), allocate())[1]
    rng = np.random.default_rng(1)
    x = (rng.integers(-128, 128, (1, 12, 10, 3)).astype(np.int8) if dtype == "int8"
         else rng.standard_normal((1, 12, 10, 3)).astype(np.float32))
    full = run_whole(data, [x])[0]
    out = runner.run(x, (0, 12, 0, 10))
    assert calls == [] and np.array_equal(out, full)
    # Rows [0, 8) of the input: SAME 3x3 twice needs 2 rows below the kept rows [0, 6).
    for _ in range(2):
        piece = runner.run(slice_region(x, (0, 8, 0, 10)), (0, 6, 0, 10))
        assert np.array_equal(piece, full[:, :6])
    assert calls == [1]
    piece = runner.run(slice_region(x, (4, 12, 0, 10)), (2, 8, 0, 10))  # same shape again
    assert np.array_equal(piece, full[:, 6:]) and calls == [1]
    assert piece.flags.owndata  # a copy, not a view of the interpreter's memory
    assert np.array_equal(runner.run(x, (0, 12, 0, 10)), full) and calls == [1, 1]


def test_runner_rejects_bad_input() -> None:
    runner = TileRunner(_model())
    x = np.zeros((1, 6, 10, 3), np.float32)
    with pytest.raises(ValueError, match="float32"):
        runner.run(x.astype(np.int8), (0, 1, 0, 1))
    with pytest.raises(ValueError, match="4-D"):
        runner.run(x[0], (0, 1, 0, 1))
    with pytest.raises(ValueError, match="crop"):
        runner.run(x, (0, 7, 0, 10))
    assert runner.run(x, (0, 6, 0, 10)).shape == (1, 6, 10, 4)  # still usable after an error
    assert runner.run(x[:, :5], (0, 5, 0, 10)).shape == (1, 5, 10, 4)  # and resizable
    g = GraphBuilder()
    g.output(g.conv2d(g.input([1, 12, 10, 3]), 4, 5, padding="VALID"))
    valid = TileRunner(g.build("float32"))
    with pytest.raises(RuntimeError):
        valid.run(x[:, :3], (0, 1, 0, 1))  # too small for a VALID 5x5: prepare fails
    assert valid.run(np.zeros((1, 12, 10, 3), np.float32), (0, 8, 0, 6)).shape == (1, 8, 6, 4)
    multi = TileRunner(_model(outputs=2))
    with pytest.raises(ValueError, match="one input and one output"):
        multi.run(x, (0, 6, 0, 10))  # two outputs: run_all, with a crop for each
    with pytest.raises(ValueError, match="1 input windows and 2 crops"):
        multi.run_all([x], [(0, 6, 0, 10)])


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_runner_crops_every_output(dtype: str) -> None:
    # Outputs x = conv(in) and y = dw(x): rows [0, 8) of the input give x rows [0, 7) and
    # y rows [0, 6) exactly (one SAME 3x3 each); every output is cropped on its own.
    data = _model(dtype, outputs=2)
    rng = np.random.default_rng(2)
    x = (rng.integers(-128, 128, (1, 12, 10, 3)).astype(np.int8) if dtype == "int8"
         else rng.standard_normal((1, 12, 10, 3)).astype(np.float32))
    full_x, full_y = run_whole(data, [x])
    runner = TileRunner(data, tile_shape=[(1, 8, 10, 3)])
    assert len(runner.output_names) == 2
    px, py = runner.run_all([slice_region(x, (0, 8, 0, 10))], [(0, 7, 0, 10), (0, 6, 0, 10)])
    assert np.array_equal(px, full_x[:, :7]) and np.array_equal(py, full_y[:, :6])


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_agent_runs_a_tile_stack_cut_inside_residual_and_route(agent, client, dtype: str) -> None:
    # End to end through a node agent: the planner's wiring of head | 2x2 tiles | tail of
    # the YOLO-like neck, the stack cut inside the residual (2 inputs in) and after the
    # FPN route (upsample + concat inside, 2 outputs); the tail gathers each output's
    # pieces. Results equal one interpreter on the whole model.
    pytest.importorskip("planner.fleet.wiring")
    from planner.fleet.wiring import wire
    from planner.model.graph import ModelGraph
    from planner.modelbuild.route import yolo_route_like
    from planner.planning.plan import Stage, tile_stage

    data = yolo_route_like(32, dtype=dtype)
    graph = ModelGraph(data)
    n = len(graph.ops)
    c = graph.producer[graph.by_name["c3/cv1/conv"]]
    e = graph.producer[graph.by_name["fpn/c3/silu"]] + 1
    assert len(graph.live_at(c)) == 2 and len(graph.live_at(e)) == 2
    stages = [Stage(0, (0, c), "n1"), tile_stage(graph, 1, (c, e), 2, 2, ["n1"]),
              Stage(2, (e, n), "n1")]
    ep = agent.dataplane.data_endpoint
    w = wire(graph, stages, {"n1": ep})
    tiles = [s.tile for s in w.specs["n1"] if s.tile is not None]
    assert len(tiles) == 4 and all(len(t.input_regions) == 2 and len(t.crops) == 2 for t in tiles)
    from node.wire import messages as M
    from node.wire.service import ServiceClient

    with ServiceClient(agent.dataplane.service_endpoint) as svc:
        for sha in w.parts_of("n1"):
            svc.upload(w.parts[sha].data)
    agent.handle(M.Deploy("d1", "", "neck", 0, tuple(w.specs["n1"])))
    rng = np.random.default_rng(3)
    shape = graph.tensors[graph.inputs[0]].shape
    x = (rng.integers(-128, 128, shape, dtype=np.int8) if dtype == "int8"
         else rng.standard_normal(shape).astype(np.float32))
    for r in w.entry:
        assert r.region is None  # the head is one whole stage
        client.send(r.to, "neck", r.stage, {r.dest_name: x}, "q1")
    names = [graph.tensors[t].name for t in graph.outputs]
    assert all(w.results[name]["pieces"] == 1 for name in names)  # the tail gathered them
    got: dict[str, np.ndarray] = {}
    while set(got) != set(names):  # both outputs, in one message or two
        h, arrs = client.recv()
        assert h.kind == "result", h.error
        got.update({m.name: a for m, a in zip(h.tensors, arrs, strict=True)})
    want = run_whole(data, [x])
    for name, ref in zip(names, want, strict=True):
        np.testing.assert_array_equal(got[name], ref)
