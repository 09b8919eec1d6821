"""The fleet commands from other processes: nodes, deploy, infer, bench, monitor, undeploy."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from node.wire import messages as m
from node.wire.results import MemoryUse
from planner.fleet.reference import LocalModel, random_inputs
from planner.planning.plan import chain
from tests.e2e import _fleet

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not _fleet.HAVE_MOSQUITTO, reason="mosquitto not installed")]


@pytest.fixture(scope="module")
def env():
    yield from _fleet.start("mosquitto")


def tf(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def _one_line_exit_2(r: subprocess.CompletedProcess, text: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in r.stderr


def test_nodes_json_lists_the_agents(env):
    r = tf("nodes", "--broker", env.broker.url, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(n["name"] for n in doc["nodes"]) == env.names
    assert all(n["data_endpoint"].startswith("tcp://") for n in doc["nodes"])


def test_infer_bench_monitor_undeploy_from_other_processes(env, tmp_path):
    g = _fleet.graph()
    model = tmp_path / "m.tflite"
    model.write_bytes(_fleet.model())
    dep = env.fleet.deploy(g, name="cli", stages=chain(len(g.ops), [25, 50], env.names))
    dep.close()
    x = random_inputs(dep.record.model["inputs"], 7)["input"]
    np.save(tmp_path / "x.npy", x)
    r = tf("infer", "--broker", env.broker.url, "--deployment", "cli", "--input",
           str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert r.returncode == 0, r.stderr
    want = LocalModel(_fleet.model()).run({"input": x})
    assert np.array_equal(np.load(tmp_path / "y.npy"), next(iter(want.values())))
    r = tf("infer", "--broker", env.broker.url, "--deployment", "cli", "--input",
           str(tmp_path / "x.npy"), "-o", str(tmp_path / "outdir"))  # a directory: NAME.npy
    assert r.returncode == 0 and len(list((tmp_path / "outdir").glob("*.npy"))) == 1
    r = tf("bench", "--broker", env.broker.url, "--deployment", "cli", "--frames", "40",
           "--check-against", str(model), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"frames", "delivered", "errors", "mismatches", "latency_p50_s", "latency_p95_s",
            "throughput_fps"} <= set(doc)
    assert (doc["frames"], doc["delivered"], doc["errors"], doc["mismatches"]) == (40, 40, 0, 0)
    assert 0 < doc["latency_p50_s"] <= doc["latency_p95_s"] and doc["throughput_fps"] > 0
    r = tf("monitor", "--broker", env.broker.url, "--count", "1")
    assert r.returncode == 0 and "cli/" in r.stdout and "deployment cli" in r.stdout
    r = tf("undeploy", "cli", "--broker", env.broker.url)
    assert r.returncode == 0, r.stderr
    _one_line_exit_2(tf("undeploy", "cli", "--broker", env.broker.url), "unknown deployment")


def test_bad_input_exits_2_with_one_line(env, tmp_path):
    g = _fleet.graph()
    env.fleet.deploy(g, name="bad-input", stages=chain(len(g.ops), [], env.names[:1])).close()
    np.save(tmp_path / "wrong.npy", np.zeros((1, 8, 8, 3), np.float32))
    url = env.broker.url
    _one_line_exit_2(tf("infer", "--broker", url, "--deployment", "bad-input", "--input",
                        str(tmp_path / "wrong.npy"), "-o", str(tmp_path / "y.npy")),
                     "expected float32[1, 64, 64, 3]")
    _one_line_exit_2(tf("infer", "--broker", url, "--deployment", "nope", "--input",
                        str(tmp_path / "wrong.npy"), "-o", str(tmp_path / "y.npy")),
                     "unknown deployment 'nope'")
    _one_line_exit_2(tf("infer", "--broker", url, "--deployment", "bad-input", "--input",
                        str(tmp_path / "missing.npy"), "-o", str(tmp_path / "y.npy")),
                     "missing.npy")
    _one_line_exit_2(tf("bench", "--broker", url, "--deployment", "nope", "--frames", "1"),
                     "unknown deployment")
    _one_line_exit_2(tf("nodes", "--broker", "mqtt://127.0.0.1:1"), "broker unreachable")
    _one_line_exit_2(tf("deploy", str(tmp_path / "wrong.npy"), "--broker", url, "--name",
                        "x"), "wrong.npy")
    env.fleet.undeploy("bad-input")


def test_plan_from_a_live_fleet(env, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(_fleet.model())
    out, prof = tmp_path / "plan.json", tmp_path / "profile.json"
    r = tf("plan", str(model), "--broker", env.broker.url, "--strategy", "latency", "-o", str(out),
           "--save-profile", str(prof), "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert set(plan["profile_file"].split("/")[-1:]) == {"profile.json"}
    devices = {s["device"] for s in plan["stages"]}
    assert devices <= set(env.names)
    profile = json.loads(prof.read_text())
    assert set(env.names) <= set(profile["devices"])
    r = tf("simulate", str(out), "--profile", str(prof), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["latency_s"] > 0


def test_memory_budgets_hold_from_the_planner_and_on_the_node(env, tmp_path):
    """A 1 MiB node: the planner keeps plans off it; a stale plan is refused by the node."""
    _fleet.spawn_tiny(env, tmp_path, 1)  # the fixture's teardown stops it if this fails
    try:
        model = tmp_path / "m.tflite"
        model.write_bytes(_fleet.model())
        url, others = env.broker.url, [a for n in env.names for a in ("--exclude", n)]
        prof = tmp_path / "profile.json"
        r = tf("plan", str(model), "--broker", url, "--strategy", "latency", "-o",
               str(tmp_path / "p.json"), "--save-profile", str(prof))
        assert r.returncode == 0, r.stderr
        doc = json.loads(prof.read_text())
        assert doc["devices"]["tiny"]["memory_bytes"] == 1 << 20  # the announced budget
        r = tf("deploy", str(model), "--broker", url, "--name", "tight", "--profile",
               str(prof), "--strategy", "latency", *others)
        _one_line_exit_2(r, "plan does not fit memory")  # the planner's memory constraint
        assert "'tiny'" in r.stderr and "budget is 1048576 bytes" in r.stderr
        doc["devices"]["tiny"]["memory_bytes"] = 1 << 40  # a stale profile lies
        prof.write_text(json.dumps(doc))
        stale = tmp_path / "stale.json"
        r = tf("plan", str(model), "--profile", str(prof), "--strategy", "latency", *others,
               "-o", str(stale))
        assert r.returncode == 0, r.stderr
        r = tf("deploy", str(model), "--broker", url, "--name", "tight", "--plan", str(stale))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        error = r.stderr.strip().splitlines()[-1]  # after the upload's progress line
        assert "node 'tiny'" in error and "memory budget 1.0 MiB exceeded" in error, error
        assert re.search(r"needs \d+\.\d MiB \(parts", error), error  # the node's own check
        assert env.fleet.control.record("tight") is None
        assert env.fleet.control.command("tiny", m.StatusQuery, 10).memory == MemoryUse(
            budget_bytes=1 << 20, in_use_bytes=0)
    finally:
        env.local.kill("tiny")


def test_plan_simulate_explain_then_deploy_exactly_that_plan(env, tmp_path):
    """The documented hand-off: a plan made on the live fleet (profile embedded) simulates
    and explains without a profile file, and `deploy --plan` runs exactly its stages."""
    model = tmp_path / "m.tflite"
    model.write_bytes(_fleet.model())
    url, plan = env.broker.url, tmp_path / "p.json"
    r = tf("plan", str(model), "--broker", url, "--strategy", "throughput", "-o", str(plan))
    assert r.returncode == 0, r.stderr
    doc = json.loads(plan.read_text())
    assert doc["model"]["file"] == str(model.resolve()) and doc["profile"]["devices"]
    r = tf("simulate", str(plan), "--json")
    assert r.returncode == 0, r.stderr
    sim = json.loads(r.stdout)
    assert sim["throughput_fps"] == pytest.approx(doc["predicted"]["throughput_fps"])
    r = tf("explain", str(plan))
    assert r.returncode == 0 and "compute ms" in r.stdout, r.stderr
    assert not re.search(r"^\s*\d+\s+\[.*\)\s+\S+\s+-\s*$", r.stdout, re.M)  # times known
    r = tf("deploy", "--plan", str(plan), "--broker", url, "--name", "planned", "--json")
    assert r.returncode == 0, r.stderr
    dep = json.loads(r.stdout)
    assert (dep["strategy"], dep["objective"]) == ("throughput", "throughput")
    want = {(tuple(s["ops"]), s["device"]) for s in doc["stages"]}
    assert {(tuple(s["ops"]), s["node"]) for s in dep["stages"].values()} == want
    assert dep["plan"]["stages"] == doc["stages"] and dep["predicted"] == doc["predicted"]
    r = tf("bench", "--broker", url, "--deployment", "planned", "--frames", "30",
           "--check-against", str(model), "--json")
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert (b["frames"], b["delivered"], b["errors"], b["mismatches"]) == (30, 30, 0, 0)
    # the model moved: --model finds it; another model file is refused in one line
    moved = tmp_path / "elsewhere.tflite"
    model.rename(moved)
    _one_line_exit_2(tf("deploy", "--plan", str(plan), "--broker", url, "--name", "x"),
                     "m.tflite")
    r = tf("deploy", "--plan", str(plan), "--model", str(moved), "--broker", url, "--name",
           "planned")
    assert r.returncode == 0 and "epoch 2" in r.stdout, r.stderr
    other = tmp_path / "other.tflite"
    other.write_bytes(_fleet.model("int8"))
    _one_line_exit_2(tf("deploy", "--plan", str(plan), "--model", str(other), "--broker", url,
                        "--name", "planned"), "plan is for model")
    assert env.fleet.control.record("planned")["epoch"] == 2
    r = tf("undeploy", "planned", "--broker", url)
    assert r.returncode == 0, r.stderr


def test_deploy_model_is_plan_then_deploy_that_plan(env, tmp_path):
    """`deploy MODEL --profile P` deploys the plan `plan MODEL --profile P` writes."""
    model = tmp_path / "m.tflite"
    model.write_bytes(_fleet.model())
    url, prof = env.broker.url, tmp_path / "profile.json"
    r = tf("plan", str(model), "--broker", url, "--strategy", "latency", "-o",
           str(tmp_path / "p.json"), "--save-profile", str(prof))
    assert r.returncode == 0, r.stderr
    planned = json.loads((tmp_path / "p.json").read_text())
    r = tf("deploy", str(model), "--broker", url, "--name", "direct", "--profile", str(prof),
           "--strategy", "latency", "--json")
    assert r.returncode == 0, r.stderr
    dep = json.loads(r.stdout)
    assert dep["plan"]["stages"] == planned["stages"] and dep["objective"] == "latency"
    assert dep["plan"]["model"] == planned["model"]
    assert tf("undeploy", "direct", "--broker", url).returncode == 0
    _one_line_exit_2(tf("deploy", "--broker", url, "--name", "x"), "MODEL")
