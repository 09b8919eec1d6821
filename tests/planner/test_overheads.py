"""Overhead profiling without a network.

Host identity into the profile, the client's cache, the echo part.
"""

from __future__ import annotations

import json

import numpy as np

from node.resources import host_identity
from node.runtime import RuntimeSettings, make_interpreter
from planner.fleet.nodes import NodeInfo
from planner.fleet.overheads import client_device, tiny_part
from planner.fleet.profiling import prior_device


def test_prior_device_carries_the_announced_host():
    r = {"host": "abc123", "host_cores": 2}
    d = prior_device(
        NodeInfo("n", "laptop", "ai_edge_litert", "2.3.0", 2, 1, 1 << 30, 1.0, "", "", r)
    )
    assert (d.host, d.host_cores) == ("abc123", 2)
    old = prior_device(
        NodeInfo("n", "laptop", "ai_edge_litert", "2.3.0", 2, 1, 1 << 30, 1.0, "", "", {})
    )
    assert (old.host, old.host_cores) == ("", 0)  # an older agent: its own host, as before


def test_client_device_reads_its_cache_and_sits_on_this_host(tmp_path):
    host = host_identity()
    assert host == host_identity() and len(host) == 16
    (tmp_path / f"client__{host}.json").write_text(
        json.dumps(
            {
                "stage_overhead_s": 1e-4,
                "piece_overhead_s": 2e-5,
                "copy_s_per_byte": 3e-10,
                "measured_at": 0,
            }
        )
    )
    c = client_device(None, None, tmp_path, max_age_s=1.0)  # no node: only what is cached
    assert not c.compute and c.host == host and c.host_cores >= 1
    assert (c.stage_overhead_s, c.piece_overhead_s, c.copy_s_per_byte) == (1e-4, 2e-5, 3e-10)
    assert client_device(None, None, tmp_path / "none", 1.0).stage_overhead_s == 0.0


def test_tiny_part_is_one_relu():
    interp = make_interpreter(tiny_part(), RuntimeSettings())
    interp.allocate_tensors()
    x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 8, 8, 4)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    assert np.array_equal(
        interp.get_tensor(interp.get_output_details()[0]["index"]), np.maximum(x, 0)
    )
