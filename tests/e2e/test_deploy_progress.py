"""Progress is a callback: a deploy on a real fleet reports its stages in order, prints nothing,
and the CLI draws it only when asked (or on a terminal)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from planner.fleet.progress import ProgressEvent
from planner.planning.constraints import Constraints
from tests.e2e import _fleet

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not _fleet.HAVE_MOSQUITTO, reason="mosquitto not installed")]


@pytest.fixture(scope="module")
def env():
    yield from _fleet.start("mosquitto")


def test_deploy_reports_profiling_then_uploads_in_order_and_prints_nothing(
        env, tmp_path, monkeypatch, capfd) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold"))  # profiling happens
    events: list[ProgressEvent] = []
    capfd.readouterr()
    dep = env.fleet.deploy(_fleet.graph(), name="progress", strategy="latency",
                           constraints=Constraints(max_nodes=2), on_progress=events.append)
    try:
        out, err = capfd.readouterr()
        assert out == "" and err == ""  # library code never prints
        stages = [e.stage for e in events]
        assert stages == sorted(stages, key=["profiling", "uploading parts"].index)
        for stage, total in (("profiling", 1), ("uploading parts", None)):
            evs = [e for e in events if e.stage == stage]
            assert evs[0].done == 0 and evs[-1].finished, evs
            assert [e.done for e in evs] == sorted(e.done for e in evs)  # never backwards
            assert len({e.total for e in evs}) == 1 and not any(e.finished for e in evs[:-1])
            if total is not None:
                assert evs[0].total == total  # three laptop agents: one node kind
        shipped = dep.record.extra["switch"]["bytes_shipped"]
        assert events[-1].total == shipped and events[-1].unit == "B"
    finally:
        dep.undeploy()


def test_the_cli_draws_progress_only_when_asked(env, tmp_path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(_fleet.model())
    cmd = [sys.executable, "-m", "planner.cli", "deploy", str(model), "--broker",
           env.broker.url, "--strategy", "latency", "--max-nodes", "2", "--json"]

    def deploy(name: str, *flags: str) -> subprocess.CompletedProcess:
        cold = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / name)}  # profiles again
        return subprocess.run([cmd[0], *cmd[1:3], *flags, *cmd[3:], "--name", name],
                              capture_output=True, text=True, timeout=300, env=cold)

    quiet = deploy("p1")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr  # not a terminal
    asked = deploy("p2", "--progress")
    assert asked.returncode == 0, asked.stderr
    # one line per finished stage: profiling (a cold cache again), uploads if any node
    # the plan picked lacks the parts
    lines = asked.stderr.splitlines()
    assert lines[0].startswith("profiling (1 node kind(s)") and len(lines) <= 2, lines
    assert all(re.fullmatch(r"(profiling|uploading parts) \(.+\): \S+ [a-zA-Z ]+ in \d+\.\d s",
                            line) for line in lines), lines
    assert json.loads(asked.stdout)["deployment"] == "p2"  # stdout: still one JSON document
    for name in ("p1", "p2"):
        env.fleet.undeploy(name)
