"""The same deploy path on the embedded amqtt broker (what `tilefleet demo` starts)."""

from __future__ import annotations

import pytest

from planner.fleet.reference import LocalModel, mismatches, random_inputs
from planner.planning.plan import Stage, tile_stage
from tests.e2e import _fleet

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def env():
    pytest.importorskip("amqtt")
    yield from _fleet.start("amqtt")


def test_profile_tiles_and_chain_on_the_embedded_broker(env, tmp_path):
    g = _fleet.graph("int8")
    profile = env.fleet.profile(g, cache_dir=tmp_path)
    assert set(profile.compute_devices()) == set(env.names)
    assert all(len(profile.devices[n].op_seconds[g.sha256]) == len(g.ops) for n in env.names)
    assert ("client", env.names[0]) in profile.links and (
        env.names[0],
        env.names[1],
    ) in profile.links
    assert list(tmp_path.glob("*.json"))  # cached for the next deploy
    a, b, c = env.names
    stages = (tile_stage(g, 0, (0, 11), (0, 10, 16), 1, (a, b)), Stage(1, (11, len(g.ops)), c))
    dep = env.fleet.deploy(g, name="embedded", stages=stages)
    xs = [random_inputs(dep.record.model["inputs"], s) for s in range(6)]
    local = LocalModel(_fleet.model("int8"))
    assert all(not mismatches(r, local.run(x)) for r, x in zip(dep.infer_many(xs), xs,
                                                                strict=True))
    dep.undeploy()
