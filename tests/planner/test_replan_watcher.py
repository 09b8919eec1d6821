"""Watcher.step with an in-memory fleet: what it feeds the policy and when it re-plans."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from planner.errors import FleetError
from planner.live import watcher as w
from planner.live.drift import DriftRule
from planner.live.replanner import Replan
from planner.profile import Device, Profile


def _record(epoch: int, nodes=("a", "b")) -> dict:
    return {"type": "deployment", "v": 1, "name": "d", "fleet": "default", "epoch": epoch,
            "model": {}, "layout": [], "strategy": "throughput", "entry": [], "results": {},
            "nodes": {n: {} for n in nodes},
            "stages": {f"s{i}": {"node": n, "ops": [i, i + 1], "part": "", "tile": None}
                       for i, n in enumerate(nodes)}}


class FakeControl:
    def __init__(self) -> None:
        self.records = {"d": _record(1)}
        self.status = {"a": {"state": "online"}, "b": {"state": "online"}}
        self.metrics: dict = {}
        self.resources = {n: {"service_endpoint": f"tcp://{n}:1"} for n in ("a", "b")}

    def online(self) -> dict:
        return {n: self.resources.get(n, {}) for n, s in self.status.items()
                if s.get("state") == "online"}

    def record(self, name: str):
        return self.records.get(name)

    def metrics_round(self, t: int, slow_b: float = 1.0) -> None:
        self.metrics = {n: {"stages": {f"d/{self.records['d']['epoch']}/s{i}": {
            "run_mean_s": 0.01 * (slow_b if n == "b" else 1.0), "frames": 400 + 20 * t}}}
            for i, n in enumerate(("a", "b"))}


@pytest.fixture
def setup(monkeypatch):
    control = FakeControl()
    calls = []

    def execute(ctl, graph, rec, profile, trig, strategy, constraints, **kw):
        calls.append(trig)
        if getattr(execute, "fail", False):
            raise FleetError("node c did not answer")
        control.records["d"] = _record(rec.epoch + 1, ("a",))
        ev = Replan("d", rec.epoch + 1, rec.epoch, trig.reason, trig.describe(), "full",
                    strategy)
        return ev, None, profile

    monkeypatch.setattr(w, "execute", execute)
    prof = Profile({"a": Device("a"), "b": Device("b")}, {})
    policy = w.ReplanPolicy(rule=DriftRule(settle_frames=0), cooldown_s=10, retry_s=2)
    watcher = w.Watcher(SimpleNamespace(control=control), "d", graph=None, profile=prof,
                        policy=policy)
    return control, watcher, calls, execute


def test_sustained_slow_down_replans_once_then_cools_down(setup):
    control, watcher, calls, _ = setup
    for t in range(4):  # warm-up and an in-band sample
        control.metrics_round(t)
        assert watcher.step(float(t)) is None
    for t in range(4, 6):
        control.metrics_round(t, slow_b=3.0)
        assert watcher.step(float(t)) is None  # not sustained yet
    control.metrics_round(6, slow_b=3.0)
    ev = watcher.step(6.0)
    assert ev is not None and ev.reason == "drift" and len(calls) == 1
    assert calls[0].drifts[0].subject == "b" and watcher.replans == [ev]
    assert watcher.step(7.0) is None  # new epoch: new history, and the cool-down


def test_node_loss_replans_at_once_and_failures_back_off(setup):
    control, watcher, calls, execute = setup
    execute.fail = True
    control.status["b"] = {"state": "offline"}
    assert watcher.step(0.0) is None and len(calls) == 1 and watcher.errors
    assert watcher.step(0.5) is None and len(calls) == 1  # retry_s not over yet
    execute.fail = False
    ev = watcher.step(3.0)
    assert ev is not None and ev.reason == "node_lost" and calls[-1].lost == ("b",)


def test_no_record_no_action(setup):
    control, watcher, calls, _ = setup
    control.records.clear()
    assert watcher.step(0.0) is None and not calls
