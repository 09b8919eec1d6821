"""Testbed specs and the calibration's arithmetic (planner/testbed/spec.py, calibrate.py)."""

from __future__ import annotations

import pytest

from node import config
from planner.testbed import LinkSpec, TestbedError, make_spec
from planner.testbed.calibrate import MIN_PERIOD_S, MIN_QUOTA_S, emulate


def test_boards_links_and_tiers_parse():
    spec = make_spec("rpi3:4,rpi4:2,edge_server:1@cloud", topology="tiers", link="20,5",
                     lan="100", backbone="10,20")
    assert [(b.kind, b.count, b.tier) for b in spec.boards] == [
        ("rpi3", 4, "device"), ("rpi4", 2, "device"), ("edge_server", 1, "cloud")]
    names = [n for n, _ in spec.nodes()]
    assert names[:5] == ["rpi3-0", "rpi3-1", "rpi3-2", "rpi3-3", "rpi4-0"] and len(names) == 7
    cloud = spec.boards[2]
    assert spec.link_of(spec.boards[0]) == LinkSpec(20, 5)
    assert spec.link_of(cloud) == LinkSpec(10, 20)
    assert make_spec("edge_server:1").boards[0].tier == "edge"  # from its speed prior
    star = make_spec("rpi3:2", link="50")
    assert star.link_of(star.boards[0]) == LinkSpec(50, 0)


@pytest.mark.parametrize("kw, words", [
    ({"boards": "rpi3"}, "KIND:COUNT"),
    ({"boards": "nosuch:1"}, "unknown board"),
    ({"boards": "rpi3:0"}, "count"),
    ({"boards": "rpi3:1,rpi3:2"}, "twice"),
    ({"boards": "rpi3:1@moon"}, "tier"),
    ({"boards": "rpi3:1", "link": "fast"}, "RATE[,DELAY]"),
    ({"boards": "rpi3:1", "link": "10,-1"}, "RATE[,DELAY]"),
    ({"boards": "rpi3:1", "backbone": "10,5"}, "--topology tiers"),
    ({"boards": "rpi3:1", "topology": "ring"}, "--topology"),
    ({"boards": "rpi3:1", "name": "Bad Name"}, "--name"),
])
def test_bad_specs_say_why_in_one_line(kw, words):
    with pytest.raises(TestbedError) as exc:
        make_spec(**kw)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_quota_is_board_speed_over_host_speed_with_a_period_for_a_1ms_quota():
    rpi3 = config.for_board("rpi3").board
    e = emulate("rpi3", host_ms_=4.0, cores_here=2)
    share = 4.0 * rpi3.reference_threads / rpi3.reference_ms
    assert e.share == pytest.approx(share, rel=1e-3)
    assert e.cpus == pytest.approx(rpi3.cores * share, rel=1e-3) and not e.capped
    assert e.cpus * e.period_s >= MIN_QUOTA_S * 0.999 and e.period_s >= MIN_PERIOD_S
    assert e.threads == 1 and e.cores == 4  # as many threads as the quota has cores
    big = emulate("edge_server", host_ms_=4.0, cores_here=2)
    assert big.capped and big.cpus == 2.0 and big.threads == 2  # capped, and says so


def test_every_board_file_cites_its_reference_speed():
    for kind in config.boards():
        b = config.for_board(kind).board
        assert b.reference_ms > 0 and b.reference_source and b.reference_workload, kind
