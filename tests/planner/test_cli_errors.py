"""`tilefleet slice` / `verify` from a real process: exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.planner.cutkit import model_bytes


def tilefleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def assert_bad_input(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, exactly one line on stderr, no traceback, the line names what is wrong."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "vgg.tflite").write_bytes(model_bytes("vgg", "float32"))
    (d / "stack.tflite").write_bytes(_stack())
    return d


def _stack() -> bytes:
    from planner.modelbuild import recipes

    return recipes.conv_stack(32, 8, dtype="int8")


def test_slice_then_verify(work: Path) -> None:
    out = work / "ok"
    proc = tilefleet("slice", work / "stack.tflite", "--at", "5", "--at", "9", "--tiles", "2x2@0",
                     "--split-rows", "2@1", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == json.loads((out / "manifest.json").read_text())
    assert [len(p["tiles"]) for p in doc["parts"]] == [4, 2, 0]
    proc = tilefleet("verify", out, "--json", "--no-xnnpack")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["identical"] is True and report["tiles"] == 6 and "builtin" in report["runtime"]
    proc = tilefleet("verify", out)
    assert proc.returncode == 0 and "identical" in proc.stdout


def test_verify_mismatch_exits_1(work: Path) -> None:
    out = work / "mismatch"
    assert tilefleet("slice", work / "vgg.tflite", "--at", "6", "-o", out).returncode == 0
    other = work / "other"
    (work / "vgg-seed1.tflite").write_bytes(model_bytes("vgg", "float32", seed=1))
    assert tilefleet("slice", work / "vgg-seed1.tflite", "--at", "6", "-o", other).returncode == 0
    man = json.loads((out / "manifest.json").read_text())
    (out / "part_001.tflite").write_bytes((other / "part_001.tflite").read_bytes())
    man["parts"][1]["sha256"] = json.loads((other / "manifest.json").read_text())["parts"][1]["sha256"]
    (out / "manifest.json").write_text(json.dumps(man))
    proc = tilefleet("verify", out, "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["identical"] is False
    assert "differ from the whole model" in proc.stderr


def test_bad_models(work: Path) -> None:
    data = model_bytes("vgg", "float32")
    cases = {
        "truncated.tflite": (data[: len(data) // 3], "damaged or truncated"),
        "tiny.tflite": (data[:5], "not a TFLite model"),
        "text.tflite": (b"hello, this is not a flatbuffer at all\n" * 4, "not a TFLite model"),
        "ident.tflite": (data[:4] + b"XXXX" + data[8:], "file identifier"),
    }
    for name, (blob, words) in cases.items():
        (work / name).write_bytes(blob)
        assert_bad_input(tilefleet("slice", work / name, "--at", "3", "-o", work / "x"), name, words)
    assert_bad_input(tilefleet("slice", work / "missing.tflite", "--at", "3", "-o", work / "x"), "cannot read model")


@pytest.mark.parametrize("args, words", [
    (["--at", "0"], "out of range"),
    (["--at", "99"], "out of range"),
    (["--at", "9", "--at", "4"], "strictly increasing"),
    (["--at", "x"], "--at"),
    (["--at", "5", "--tiles", "2by2@0"], "RxC@K"),
    (["--at", "5", "--tiles", "2x2@1"], "op"),
    (["--at", "5", "--tiles", "2x2@7"], "cannot tile part 7"),
    (["--at", "5", "--split-rows", "5,3@0"], "split"),
    ([], "-o"),
])
def test_impossible_slices(work: Path, args: list[str], words: str) -> None:
    extra = [] if args == [] else ["-o", work / "never"]
    assert_bad_input(tilefleet("slice", work / "vgg.tflite", *args, *extra), words)
    assert not (work / "never").exists()


def test_bad_slice_dirs(work: Path) -> None:
    assert_bad_input(tilefleet("verify", work / "nowhere"), "cannot read manifest")
    d = work / "damaged"
    assert tilefleet("slice", work / "vgg.tflite", "--at", "6", "-o", d).returncode == 0
    good = (d / "manifest.json").read_text()
    (d / "manifest.json").write_text(good[: len(good) // 2])
    assert_bad_input(tilefleet("verify", d), "manifest.json", "not valid JSON")
    doc = json.loads(good)
    doc["parts"][1]["file"] = "part_009.tflite"
    (d / "manifest.json").write_text(json.dumps(doc))
    assert_bad_input(tilefleet("verify", d), "part_009.tflite", "cannot read part file")
    doc = json.loads(good)
    del doc["parts"][0]["outputs"]
    (d / "manifest.json").write_text(json.dumps(doc))
    assert_bad_input(tilefleet("verify", d), "parts[0].outputs: missing")
    (d / "manifest.json").write_text(good)
    (d / "part_000.tflite").write_bytes(b"garbage")
    assert_bad_input(tilefleet("verify", d), "part_000.tflite", "sha256")
    assert_bad_input(tilefleet("verify", d, "--threads", "0"), "--threads")
    (work / "notes.tflite").write_text("not a model\n")
    assert_bad_input(tilefleet("verify", d, "--model", work / "notes.tflite"), "notes.tflite")
