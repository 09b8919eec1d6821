"""`tilefleet plan / simulate / explain` as a user runs them: exit codes and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from planner.modelbuild import recipes

PROFILE = {
    "version": 1,
    "devices": {
        "cam": {"board": "rpi3", "memory_bytes": 400_000_000, "speed": 1e9},
        "pi4": {"board": "rpi4", "memory_bytes": 2_000_000_000, "speed": 2e9},
        "edge": {"tier": "edge", "memory_bytes": 16_000_000_000, "speed": 1.6e10},
        "client": {"compute": False, "memory_bytes": 1},
    },
    "links": [{"from": "cam", "to": "edge", "bandwidth": 2.5e6, "latency": 0.005}],
    "default_link": {"bandwidth": 12.5e6, "latency": 0.001},
    "source": "cam",
    "sink": "client",
}


def tf(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    (d / "m.tflite").write_bytes(recipes.random_dag(3, 10, input_size=32))
    (d / "p.json").write_text(json.dumps(PROFILE))
    return d


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize(
    "strategy", ["latency", "throughput", "neurosurgeon", "dads", "even", "memory"]
)
def test_plan_simulate_explain(files, strategy):
    plan = files / f"{strategy}.json"
    r = tf(
        "plan",
        str(files / "m.tflite"),
        "--profile",
        str(files / "p.json"),
        "--strategy",
        strategy,
        "-o",
        str(plan),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (
        doc["version"] == 1 and doc["strategy"] == strategy and json.loads(plan.read_text()) == doc
    )
    r = tf("simulate", str(plan), "--json")
    assert r.returncode == 0, r.stderr
    sim = json.loads(r.stdout)
    assert {"latency_s", "throughput_fps", "bytes_per_frame", "devices"} <= set(sim)
    assert sim["latency_s"] == pytest.approx(doc["predicted"]["latency_s"])
    for rec in sim["devices"].values():
        assert {"busy_s", "memory_bytes"} <= set(rec)
    r = tf("explain", str(plan))
    assert r.returncode == 0 and "stage" in r.stdout, r.stderr


def test_constraints_on_the_command_line(files):
    r = tf(
        "plan",
        str(files / "m.tflite"),
        "--profile",
        str(files / "p.json"),
        "--strategy",
        "latency",
        "-o",
        str(files / "c.json"),
        "--json",
        "--pin",
        "0:3@cam",
        "--exclude",
        "pi4",
        "--max-nodes",
        "2",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["stages"][0]["device"] == "cam" and doc["stages"][0]["ops"][1] >= 3
    assert all(s["device"] != "pi4" for s in doc["stages"]) and len(doc["stages"]) <= 2


def test_bad_input_exits_2_with_one_line(files, tmp_path):
    m, p = str(files / "m.tflite"), str(files / "p.json")
    out = str(tmp_path / "x.json")
    one_line_error(
        tf("plan", m, "--profile", str(tmp_path / "none.json"), "--strategy", "latency", "-o", out),
        "cannot read profile",
    )
    (tmp_path / "bad.json").write_text('{"version": 1, "devices": {"a": {"speed": 1}}}')
    one_line_error(
        tf("plan", m, "--profile", str(tmp_path / "bad.json"), "--strategy", "latency", "-o", out),
        "bad.json",
        "devices.a",
        "memory_bytes",
    )
    (tmp_path / "junk.json").write_text("{")
    one_line_error(
        tf("plan", m, "--profile", str(tmp_path / "junk.json"), "--strategy", "even", "-o", out),
        "not valid JSON",
    )
    one_line_error(
        tf("plan", m, "--profile", p, "--strategy", "latency", "-o", out, "--exclude", "ghost"),
        "unknown node 'ghost'",
    )
    one_line_error(
        tf("plan", m, "--profile", p, "--strategy", "latency", "-o", out, "--pin", "0:2@ghost"),
        "unknown node 'ghost'",
    )
    one_line_error(tf("plan", m, "--profile", p, "--strategy", "nope", "-o", out), "--strategy")
    one_line_error(
        tf("plan", m, "--broker", "mqtt://127.0.0.1:1", "--strategy", "latency", "-o", out),
        "broker unreachable",
    )
    tiny = json.loads(json.dumps(PROFILE))
    for d in tiny["devices"].values():
        d["memory_bytes"] = 5000
    (tmp_path / "tiny.json").write_text(json.dumps(tiny))
    for s in ("latency", "even"):
        one_line_error(
            tf("plan", m, "--profile", str(tmp_path / "tiny.json"), "--strategy", s, "-o", out),
            "does not fit memory",
            "bytes",
        )
    one_line_error(tf("simulate", str(tmp_path / "missing.json")), "cannot read plan")


def test_explain_png(files, tmp_path):
    pytest.importorskip("matplotlib")
    plan = files / "latency.json"
    if not plan.exists():
        tf(
            "plan",
            str(files / "m.tflite"),
            "--profile",
            str(files / "p.json"),
            "--strategy",
            "latency",
            "-o",
            str(plan),
        )
    r = tf("explain", str(plan), "--png", str(tmp_path / "x.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_explain_png_without_matplotlib_is_one_line(files, tmp_path):
    plan = files / "even.json"
    tf(
        "plan",
        str(files / "m.tflite"),
        "--profile",
        str(files / "p.json"),
        "--strategy",
        "even",
        "-o",
        str(plan),
    )
    code = ("import sys; sys.modules['matplotlib'] = None; from planner.cli import main; "
            f"sys.exit(main(['explain', {str(plan)!r}, '--png', {str(tmp_path / 'x.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    one_line_error(r, "needs matplotlib", "pip install")


def test_the_plan_carries_its_profile_and_older_plans_still_read(files, tmp_path):
    """simulate/explain need no profile file (the plan embeds it); a plan without the
    embedded profile (an older one) reads the file it names; no profile at all: one line."""
    plan = tmp_path / "p.json"
    r = tf(
        "plan",
        str(files / "m.tflite"),
        "--profile",
        str(files / "p.json"),
        "--strategy",
        "latency",
        "-o",
        str(plan),
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(plan.read_text())
    assert doc["profile"]["devices"].keys() == PROFILE["devices"].keys()
    (files / "p.json").rename(files / "p.moved")  # the profile file is gone: the plan has it
    try:
        r = tf("simulate", str(plan), "--json")
        assert r.returncode == 0, r.stderr
        want = json.loads(r.stdout)["latency_s"]
        assert want == pytest.approx(doc["predicted"]["latency_s"])
        r = tf("explain", str(plan))
        assert r.returncode == 0 and re.search(
            r"^\s*0\s+\[0, \d+\)\s+\S+\s+\d+\.\d{3}$", r.stdout, re.M
        ), r.stdout
        older = dict(doc)
        del older["profile"]
        (tmp_path / "old.json").write_text(json.dumps(older))
        one_line_error(tf("simulate", str(tmp_path / "old.json")), "cannot read profile")
    finally:
        (files / "p.moved").rename(files / "p.json")
    r = tf("simulate", str(tmp_path / "old.json"), "--json")  # its profile_file is back
    assert r.returncode == 0 and json.loads(r.stdout)["latency_s"] == pytest.approx(want), r.stderr
    del older["profile_file"]
    (tmp_path / "none.json").write_text(json.dumps(older))
    one_line_error(
        tf("simulate", str(tmp_path / "none.json")), "neither embeds nor names a profile"
    )
