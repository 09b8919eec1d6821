"""The CLI from a real process: exit codes, one-line errors, --json (`slice`, `verify`), and
the contract slips: a closed pipe, auto's refusal, an over-budget deploy on a cold cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planner.modelbuild import recipes
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
    man["parts"][1]["sha256"] = json.loads((other / "manifest.json").read_text())["parts"][1][
        "sha256"
    ]
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
        assert_bad_input(
            tilefleet("slice", work / name, "--at", "3", "-o", work / "x"), name, words
        )
    assert_bad_input(
        tilefleet("slice", work / "missing.tflite", "--at", "3", "-o", work / "x"),
        "cannot read model",
    )


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


# --- contract slips: a closed pipe, auto's refusal, an over-budget deploy on a cold cache ---

def test_inspect_into_head_exits_0_without_a_traceback(work: Path) -> None:
    model = work / "mb.tflite"
    model.write_bytes(model_bytes("mobilenet", "float32"))
    sh = (f"set -o pipefail; {sys.executable} -m planner.cli inspect {model} | head -3 "
          ">/dev/null")  # pipefail: the exit status is tilefleet's own
    proc = subprocess.run(["bash", "-c", sh], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # deterministic: the reader is gone before the first write
    for extra in ([], ["--json"]):
        read, write = os.pipe()
        os.close(read)
        try:
            proc = subprocess.run([sys.executable, "-m", "planner.cli", "inspect", str(model),
                                   *extra], stdout=write, stderr=subprocess.PIPE, text=True,
                                  timeout=120)
        finally:
            os.close(write)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_auto_refusal_is_one_short_line_naming_the_objective(work: Path) -> None:
    (work / "dag.tflite").write_bytes(recipes.random_dag(3, 10, input_size=32))
    starved = {"version": 1,
               "devices": {"cam": {"board": "rpi3", "memory_bytes": 1000, "speed": 1e9},
                           "pi4": {"board": "rpi4", "memory_bytes": 2000, "speed": 2e9},
                           "client": {"compute": False, "memory_bytes": 1}},
               "links": [], "default_link": {"bandwidth": 12.5e6, "latency": 0.001},
               "source": "cam", "sink": "client"}
    (work / "starved.json").write_text(json.dumps(starved))
    for objective in ("latency", "throughput"):
        proc = tilefleet("plan", work / "dag.tflite", "--profile", work / "starved.json",
                         "--strategy", "auto", "--objective", objective, "-o", work / "no.json")
        assert_bad_input(proc, f"no plan for {objective}", f"{objective} says",
                         "does not fit memory", "other refusals")
        assert len(proc.stderr.rstrip("\n")) < 200, proc.stderr
        assert not (work / "no.json").exists()


@pytest.fixture(scope="module")
def fleet_env():
    """A real Mosquitto and three agent processes (tests/e2e/_fleet.py)."""
    from tests.e2e import _fleet

    if not _fleet.HAVE_MOSQUITTO:
        pytest.skip("mosquitto not installed")
    yield from _fleet.start("mosquitto")


@pytest.mark.e2e
def test_over_budget_deploy_on_a_cold_profile_cache_prints_one_line(fleet_env, tmp_path) -> None:
    from tests.e2e import _fleet

    env = fleet_env
    _fleet.spawn_tiny(env, tmp_path, 6)  # 6 MiB: the profiling probes fit, the model not
    try:
        model = tmp_path / "m.tflite"
        model.write_bytes(_fleet.model())
        cold = tmp_path / "cache"  # nothing profiled yet: deploy profiles every node first
        others = [a for n in env.names for a in ("--exclude", n)]
        proc = subprocess.run(
            [sys.executable, "-m", "planner.cli", "deploy", str(model), "--broker",
             env.broker.url, "--name", "tight", "--strategy", "latency", *others],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "XDG_CACHE_HOME": str(cold)})
        assert_bad_input(proc, "plan does not fit memory", "'tiny'")
        assert list((cold / "tilefleet" / "profiles").glob("*.json"))  # it did profile
        assert env.fleet.control.record("tight") is None
    finally:
        env.local.kill("tiny")
