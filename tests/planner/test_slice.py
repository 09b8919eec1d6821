"""slice_model: part files + manifest.json (docs/cli.md), tiles, and manifest loading."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from planner.errors import CutError, TileError
from planner.model.cut import cut_at
from planner.model.graph import ModelGraph
from planner.model.manifest import ManifestError, check_chain, load_manifest, parse_manifest
from planner.model.slicer import TileRequest, slice_model
from planner.model.verify import verify_slice
from planner.modelbuild import recipes
from tests.planner.cutkit import compute_ops, graph_of

PART_KEYS = {"file", "sha256", "ops", "inputs", "outputs", "tiles"}
TENSOR_KEYS = {"name", "shape", "dtype", "scale", "zero_point"}


@cache
def stack_graph(dtype: str) -> ModelGraph:
    """conv_stack at 64 px: ops [0, 5) are convs, depthwise and a residual ADD."""
    return ModelGraph(recipes.conv_stack(64, 8, dtype=dtype), f"stack-{dtype}")


def write_model(tmp_path: Path, graph: ModelGraph) -> ModelGraph:
    path = tmp_path / "model.tflite"
    path.write_bytes(graph.data)
    return ModelGraph.load(path)


def test_manifest_format(tmp_path: Path) -> None:
    g = write_model(tmp_path, graph_of("yolo", "int8"))
    c = compute_ops(g)
    points = [c[8], c[20]]
    man = slice_model(g, points, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert doc["version"] == 1
    assert doc["model"] == {"file": str((tmp_path / "model.tflite").resolve()), "sha256": g.sha256,
                            "inputs": ["input"], "outputs": ["head1/detect", "head2/detect"]}
    assert [p["file"] for p in doc["parts"]] == [
        "part_000.tflite",
        "part_001.tflite",
        "part_002.tflite",
    ]
    assert [p["ops"] for p in doc["parts"]] == [[0, points[0]], points, [points[1], len(g.ops)]]
    for p, part in zip(doc["parts"], cut_at(g, points), strict=True):
        assert set(p) == PART_KEYS and p["tiles"] == []
        assert p["sha256"] == part.sha256
        assert (tmp_path / "out" / p["file"]).read_bytes() == part.data
        for t in p["inputs"] + p["outputs"]:
            assert set(t) == TENSOR_KEYS and t["dtype"] == "int8"
            assert isinstance(t["scale"], float) and isinstance(t["zero_point"], int)
    assert load_manifest(tmp_path / "out") == man
    check_chain(man, ["input"])


def test_tiled_part_matches_untiled(tmp_path: Path) -> None:
    for dtype in ("float32", "int8"):
        g = write_model(tmp_path, stack_graph(dtype))
        out = tmp_path / f"tiles-{dtype}"
        man = slice_model(g, [5, 9], out, {0: (2, 2), 1: TileRequest((3, 9), 2)})
        assert len(man.parts[0].tiles) == 4 and len(man.parts[1].tiles) == 6
        assert [t.output_region[:2] for t in man.parts[1].tiles[::2]] == [(0, 3), (3, 9), (9, 14)]
        assert load_manifest(out) == man
        report = verify_slice(out)
        assert report.identical and report.tiles == 10, report.to_json()


def test_untileable_part_is_refused_before_writing(tmp_path: Path) -> None:
    g = write_model(tmp_path, graph_of("vgg", "float32"))
    with pytest.raises(
        TileError, match=r"part 1 .*op \d+ \((RESHAPE|FULLY_CONNECTED|SOFTMAX|MEAN)\)"
    ):
        slice_model(g, [5], tmp_path / "never", {1: (2, 2)})
    assert not (tmp_path / "never").exists()
    with pytest.raises(CutError, match="cannot tile part 2"):
        slice_model(g, [5], tmp_path / "never", {2: (2, 2)})


def test_impossible_cut_points_write_nothing(tmp_path: Path) -> None:
    g = write_model(tmp_path, graph_of("vgg", "float32"))
    with pytest.raises(CutError):
        slice_model(g, [7, 3], tmp_path / "never")
    assert not (tmp_path / "never").exists()


def _doc(tmp_path: Path) -> dict:
    g = write_model(tmp_path, stack_graph("float32"))
    slice_model(g, [5], tmp_path / "s", {0: (2, 2)})
    return json.loads((tmp_path / "s" / "manifest.json").read_text())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("version"), r"version: missing"),
        (lambda d: d.update(version=2), r"version: unsupported version 2"),
        (lambda d: d["model"].pop("sha256"), r"model\.sha256: missing"),
        (lambda d: d["parts"][1].update(ops=[3]), r"parts\[1\]\.ops: expected 2 integers"),
        (
            lambda d: d["parts"][0]["outputs"][0].update(shape="1x2"),
            r"parts\[0\]\.outputs\[0\]\.shape: expected a list",
        ),
        (lambda d: d["parts"][0]["tiles"][1].pop("crop"), r"parts\[0\]\.tiles\[1\]\.crop: missing"),
        (
            lambda d: d["parts"][0]["inputs"][0].update(zero_point=True),
            r"zero_point: expected an integer or null",
        ),
        (lambda d: d.update(parts=[]), r"parts: no parts"),
    ],
)
def test_manifest_errors_name_the_key(tmp_path: Path, edit, message) -> None:
    doc = _doc(tmp_path)
    edit(doc)
    with pytest.raises(ManifestError, match=message) as info:
        parse_manifest(doc, "m.json")
    assert str(info.value).startswith("m.json: ")


def test_manifest_allows_extra_fields(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    doc["planner"] = {"strategy": "even"}
    doc["parts"][0]["device"] = "pi4-a"
    doc["parts"][0]["inputs"][0]["layout"] = "NHWC"
    assert len(parse_manifest(doc).parts) == 2


def test_broken_chain_is_reported(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    doc["parts"][1]["inputs"][0]["name"] = "ghost"
    with pytest.raises(ManifestError, match=r"parts\[1\]\.inputs: 'ghost' is neither"):
        check_chain(parse_manifest(doc), ["input"])


def test_unreadable_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
