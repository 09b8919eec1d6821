"""verify_slice: runs the chain (and tiles) by name against the whole model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from node.runtime import RuntimeSettings
from planner.errors import ModelError
from planner.model.graph import ModelGraph
from planner.model.manifest import ManifestError
from planner.model.slicer import slice_model
from planner.model.verify import random_input, verify_slice
from tests.planner.cutkit import compute_ops, graph_of, model_bytes


def make_slice(tmp_path: Path, name: str, dtype: str, n_points: int = 2, **options) -> Path:
    model = tmp_path / f"{name}-{dtype}.tflite"
    model.write_bytes(model_bytes(name, dtype, **options))
    g = graph_of(name, dtype, **options)
    c = compute_ops(g)
    points = [c[(i + 1) * len(c) // (n_points + 1)] for i in range(n_points)]
    out = tmp_path / f"slice-{name}-{dtype}"
    slice_model(ModelGraph.load(model), points, out)
    return out


@pytest.mark.parametrize(
    "settings",
    [RuntimeSettings(1, True), RuntimeSettings(1, False), RuntimeSettings(2, True)],
    ids=["xnnpack", "builtin", "xnnpack-2threads"],
)
@pytest.mark.parametrize(
    "name, dtype", [("yolo", "int8"), ("early_exit", "float32"), ("resnet", "int8")]
)
def test_verify_identical(tmp_path: Path, name: str, dtype: str, settings: RuntimeSettings) -> None:
    report = verify_slice(make_slice(tmp_path, name, dtype), settings=settings)
    assert report.identical and report.max_abs_diff == 0.0
    g = graph_of(name, dtype)
    assert [o.name for o in report.outputs] == [g.tensors[t].name for t in g.outputs]
    doc = report.to_json()
    assert doc["identical"] is True and doc["parts"] == 3 and doc["runtime"].endswith(
        ("xnnpack/t1", "builtin/t1", "xnnpack/t2"))


def test_model_is_found_next_to_the_slice_or_by_override(tmp_path: Path) -> None:
    out = make_slice(tmp_path, "vgg", "float32")
    moved = tmp_path / "elsewhere.tflite"
    shutil.move(tmp_path / "vgg-float32.tflite", moved)
    with pytest.raises(ModelError, match="model file not found"):
        verify_slice(out)
    assert verify_slice(out, model=moved).identical
    with pytest.raises(ModelError, match="not the model this slice was cut from"):
        verify_slice(out, model=_other_model(tmp_path))


def _other_model(tmp_path: Path) -> Path:
    p = tmp_path / "other.tflite"
    p.write_bytes(model_bytes("vgg", "int8"))
    return p


def test_damaged_part_is_reported(tmp_path: Path) -> None:
    out = make_slice(tmp_path, "vgg", "float32")
    part = out / "part_001.tflite"
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(ManifestError, match="part_001.tflite: sha256 does not match"):
        verify_slice(out)
    part.unlink()
    with pytest.raises(ManifestError, match="part_001.tflite: cannot read part file"):
        verify_slice(out)


def test_different_weights_are_detected(tmp_path: Path) -> None:
    """A part from a model with other weights (same shapes) runs but differs."""
    out = make_slice(tmp_path, "vgg", "float32")
    other = tmp_path / "other"
    other_model = tmp_path / "seed1.tflite"
    other_model.write_bytes(model_bytes("vgg", "float32", seed=1))
    man = json.loads((out / "manifest.json").read_text())
    slice_model(
        ModelGraph.load(other_model), [man["parts"][1]["ops"][0], man["parts"][2]["ops"][0]], other
    )
    shutil.copy(other / "part_001.tflite", out / "part_001.tflite")
    man["parts"][1]["sha256"] = json.loads((other / "manifest.json").read_text())["parts"][1][
        "sha256"
    ]
    (out / "manifest.json").write_text(json.dumps(man))
    report = verify_slice(out)
    assert not report.identical and report.max_abs_diff > 0


def test_random_inputs_are_deterministic_and_typed() -> None:
    a = random_input((2, 3), "int8", np.random.default_rng(0))
    b = random_input((2, 3), "int8", np.random.default_rng(0))
    assert a.dtype == np.int8 and np.array_equal(a, b)
    assert random_input((4,), "float32", np.random.default_rng(1)).dtype == np.float32
