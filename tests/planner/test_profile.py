"""Profile format: round trip, hash, validation errors naming file and key, priors, measurements."""

from __future__ import annotations

import json

import pytest

from node.config import config_dir
from planner.errors import ProfileError
from planner.model.graph import ModelGraph
from planner.modelbuild import recipes
from planner.planning.profile import (
    Device,
    Link,
    Profile,
    analytic_op_seconds,
    from_board_files,
    load_profile,
    op_seconds,
    profile_from_json,
    save_profile,
)

BOARDS = config_dir()
DOC = {"version": 1,
       "devices": {"cam": {"board": "rpi3", "memory_bytes": 1000, "speed": 1e9},
                   "srv": {"tier": "edge", "memory_bytes": 10**9, "speed": 1e10, "cores": 16}},
       "links": [{"from": "cam", "to": "srv", "bandwidth": 1e6, "latency": 0.01}],
       "default_link": {"bandwidth": 1e7, "latency": 0.001}, "source": "cam", "sink": "srv"}


def test_round_trip_and_stable_hash(tmp_path):
    p = profile_from_json(DOC)
    path = tmp_path / "p.json"
    save_profile(p, path)
    q = load_profile(path)
    assert q == p
    assert q.sha256() == p.sha256()
    assert profile_from_json(json.loads(json.dumps(p.to_json()))).sha256() == p.sha256()


def test_links_symmetric_unless_both_directions_given():
    p = profile_from_json(DOC)
    assert p.link("srv", "cam") == Link(1e6, 0.01)
    assert p.transfer_seconds("cam", "cam", 10**6) == 0.0
    assert p.transfer_seconds("cam", "srv", 10**6) == pytest.approx(1.01)
    doc = {
        **DOC,
        "links": DOC["links"] + [{"from": "srv", "to": "cam", "bandwidth": 2e6, "latency": 0}],
    }
    assert profile_from_json(doc).transfer_seconds("srv", "cam", 2e6) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("version"), "key 'version'"),
        (
            lambda d: d["devices"]["cam"].pop("memory_bytes"),
            "devices.cam: missing key 'memory_bytes'",
        ),
        (
            lambda d: d["devices"]["cam"].update(speed=-1),
            "devices.cam: key 'speed' must be a number > 0",
        ),
        (lambda d: d["devices"]["srv"].update(tier="moon"), "devices.srv: key 'tier'"),
        (
            lambda d: d["links"][0].update(to="nowhere"),
            "links[0]: key 'to' names unknown device 'nowhere'",
        ),
        (lambda d: d.update(source="ghost"), "key 'source' names unknown device 'ghost'"),
        (lambda d: d["devices"]["cam"].update(op_seconds={"abc": [1, "x"]}), "op_seconds.abc"),
    ],
)
def test_validation_names_file_and_key(tmp_path, mutate, message):
    doc = json.loads(json.dumps(DOC))
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(tmp_path / "x.json")


def test_analytic_times_and_measured_merge():
    g = ModelGraph(recipes.random_dag(1, 6))
    d = Device("a", speed=1e9, bytes_per_s=1e9, op_overhead_s=1e-5)
    est = op_seconds(d, g)
    assert est == [analytic_op_seconds(d, op.type, op.macs, op.activation_bytes) for op in g.ops]
    assert all(t >= 1e-5 for t in est)
    p = Profile({"a": d}, {}).with_measured("a", g.sha256, [0.5] * len(g.ops))
    assert op_seconds(p.devices["a"], g) == [0.5] * len(g.ops)
    bad = Profile({"a": d}, {}).with_measured("a", g.sha256, [0.5])
    with pytest.raises(ProfileError, match=f"has 1 entries, the model has {len(g.ops)} ops"):
        op_seconds(bad.devices["a"], g)


def test_priors_from_board_files():
    p = from_board_files(
        {"pi4": BOARDS / "rpi4.toml", "edge": BOARDS / "edge_server.toml"}, source="pi4"
    )
    assert p.devices["edge"].speed == pytest.approx(8 * p.devices["pi4"].speed)
    assert p.devices["edge"].tier == "edge" and p.devices["pi4"].tier == "device"
    assert p.devices["pi4"].memory_bytes == 2048 * 2**20
    assert not p.devices["client"].compute
    assert profile_from_json(p.to_json()) == p
