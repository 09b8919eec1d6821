"""An agent throttled mid-stream (cgroup CPU quota) makes the planner move work off it.

The busiest agent of a 4-agent throughput pipeline gets 10 % of a core through
tools/throttle.py (cgroup v1 cpu.cfs_quota_us, or v2 cpu.max). The watcher sees its
stage's busy time per frame drift (interval means from the agents' metrics), re-plans,
and the re-planned deployment's throughput is compared with a fresh full plan made for
the new conditions (the victim's slow-down measured independently: the whole model alone
on it versus on another agent). The two run side by side in alternating short bursts
and the ratio is the median of the per-round ratios, so other load on a shared machine
hits both alike. ~16 s; skipped with the reason where cgroups are not writable.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from planner.live import DriftRule, ReplanPolicy
from planner.local.drills import throttle_drill
from tests.e2e._live import HAVE_MOSQUITTO

TOOL = Path(__file__).resolve().parents[2] / "tools" / "throttle.py"


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)


def _layout(stages: dict) -> str:
    return " ".join(f"{st['node']}:{st['ops'][0]}-{st['ops'][1]}" for st in stages.values())


def _around(r: dict) -> str:
    return " ".join(f"{t:+.1f}s:{x:.1f}x" for t, x in r["victim_samples"] if t > -1.5)


def _cgroups_reason() -> str:
    r = _tool("--check")
    return "" if r.returncode == 0 else (r.stderr.strip() or "cgroups not usable")


pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto not installed")]


def test_throttled_agent_loses_its_work_and_throughput_recovers(mosquitto):
    reason = _cgroups_reason()
    if reason:
        pytest.skip(f"cannot throttle here: {reason}")

    def throttle(pid: int) -> None:
        r = _tool("--pid", str(pid), "--cpu", "0.1")
        assert r.returncode == 0, r.stderr

    def release(pid: int) -> None:
        _tool("--pid", str(pid), "--release")

    # 4 agents share this machine's cores, so neighbours' stage times move by ~1.5x as
    # load shifts; a 2x band keeps those from triggering (boards have a core each).
    policy = ReplanPolicy(rule=DriftRule(threshold=1.0), cooldown_s=600)
    r = throttle_drill(mosquitto.url, throttle, release, "0.1 CPU", policy=policy)
    share, ev = r["victim_macs_share"], r["replan"] or {}
    rounds = " ".join(f"{a:.0f}/{f:.0f}" for a, f in zip(r["rounds"]["after"],
                                                         r["rounds"]["fresh"], strict=True))
    print(
        f"\nthrottle {r['victim']} to 0.1 CPU: fps before {r['fps_before']:.0f}, throttled "
        f"{r['fps_throttled'] or 0:.0f}; re-plan {r['detect_s'] or 0:.1f} s after the "
        f"throttle (victim's samples / baseline by seconds after it: {_around(r)}); "
        f"after re-plan / fresh plan per round {rounds} -> "
        f"{r['after_vs_fresh']:.2f}x; victim {r['victim_slowdown_solo']:.1f}x slower alone; "
        f"its MACs share {share['before']:.2f} -> {share['after']:.2f} (fresh "
        f"{share['fresh']:.2f}); {ev.get('mode')} re-plan: {ev.get('detail')}; stages after "
        f"{_layout(r['stages']['after'])}, fresh {_layout(r['stages']['fresh'])}; "
        f"phases {r['seconds']}"
    )
    assert r["replanned"], r["replan_errors"]
    assert not r["replans_before_throttle"], r["replans_before_throttle"]
    assert r["replan"]["reason"] == "drift" and r["victim"] in r["replan"]["detail"]
    assert share["after"] < share["before"] / 2
    assert r["after_vs_fresh"] >= 0.8
    assert r["identical"] == r["results"] > 0 and not r["errors"]
    assert r["delivered_once"]  # every request id completed exactly once
