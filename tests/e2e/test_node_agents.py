"""Agents as real processes on a real broker: announce, Last Will, chain, tiles, failures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from node.runtime import RuntimeSettings, run_whole
from node.wire import messages as M
from node.wire.frames import CLIENT
from node.wire.service import ServiceClient
from tests.node.harness import Client, Fleet, cid
from tests.node.models import three_parts, tiled_head

pytestmark = pytest.mark.e2e


def inputs_of(part) -> tuple[M.InputSpec, ...]:
    return tuple(M.InputSpec(t.name, t.dtype, t.shape) for t in part.inputs)


def deploy_chain_on(fleet: Fleet, chain, name: str = "chain") -> list[str]:
    """Part k on node k; returns the node names in chain order."""
    nodes = fleet.names[: len(chain.parts)]
    for node, p in zip(nodes, chain.parts, strict=True):
        with ServiceClient(fleet.service(node)) as svc:
            svc.upload(p.data)
    for k, (node, p) in enumerate(zip(nodes, chain.parts, strict=True)):
        last = k == len(nodes) - 1
        to = CLIENT if last else fleet.data(nodes[k + 1])
        routes = tuple(M.Route(o, to, "" if last else f"s{k + 1}") for o in p.output_names)
        stage = M.StageSpec(f"s{k}", p.sha256, inputs_of(p), routes)
        r = fleet.cmd.command(node, M.Deploy(cid(), "", name, 0, (stage,)))
        assert r["ok"], r
    return nodes


def test_announce_and_last_will(mosquitto, tmp_path: Path) -> None:
    with Fleet(mosquitto.url, tmp_path, 2) as fleet:
        res = fleet.res["n0"]
        assert res["type"] == "resources" and res["runtime"] in ("ai_edge_litert", "tflite_runtime")
        assert res["data_endpoint"].startswith("tcp://127.0.0.1:")
        assert res["board"] == "laptop" and res["cores"] >= 1
        fleet.agents["n0"].kill()
        fleet.cmd.wait_for(lambda: fleet.cmd.status["n0"]["state"] == "offline", 10,
                           "Last Will of n0")
        assert fleet.cmd.status["n1"]["state"] == "online"
        fleet.agents["n1"].stop()  # clean stop publishes offline itself
        fleet.cmd.wait_for(lambda: fleet.cmd.status["n1"]["state"] == "offline", 10, "n1 off")


def test_three_stage_chain_across_agents(mosquitto, tmp_path: Path) -> None:
    chain = three_parts()
    with Fleet(mosquitto.url, tmp_path, 3) as fleet:
        nodes = deploy_chain_on(fleet, chain)
        client = Client()
        try:
            rng = np.random.default_rng(0)
            xs = [rng.standard_normal((1, 32, 32, 3)).astype(np.float32) for _ in range(8)]
            for i, x in enumerate(xs):  # all in flight at once
                client.send(fleet.data(nodes[0]), "chain", "s0", {"input": x}, f"r{i}")
            got = {}
            for _ in xs:
                h, arrs = client.recv()
                assert h.kind == "result", h.error
                got[h.request] = arrs[0]
            for i, x in enumerate(xs):
                want = run_whole(chain.model, [x], RuntimeSettings(threads=1))[0]
                np.testing.assert_array_equal(got[f"r{i}"], want)
            fleet.cmd.wait_for(lambda: fleet.cmd.metrics.get("n1", {}).get("stages", {}).get(
                "chain/0/s1", {}).get("frames") == 8, 10, "metrics of n1")
        finally:
            client.close()


def test_2x2_tiles_across_agents(mosquitto, tmp_path: Path) -> None:
    chain, layout = tiled_head()
    head, tail = chain.parts
    (mid,) = head.output_names
    with Fleet(mosquitto.url, tmp_path, 3) as fleet:
        hub, workers = "n0", ["n1", "n2"]
        for n in fleet.names:
            with ServiceClient(fleet.service(n)) as svc:
                svc.upload(head.data if n in workers else tail.data)
        tile_stages: dict[str, list[M.StageSpec]] = {w: [] for w in workers}
        split_routes = []
        for i, t in enumerate(layout.tiles):
            w = workers[i % 2]
            split_routes.append(M.Route("input", fleet.data(w), f"t{i}", region=t.input_region))
            tile_stages[w].append(M.StageSpec(
                f"t{i}", head.sha256, inputs_of(head), (M.Route(mid, fleet.data(hub), "tail"),),
                tile=M.TileSpec(t.input_region, t.output_region, t.crop)))
        ti = tail.inputs[0]
        hub_stages = (
            M.StageSpec("split", None, inputs_of(head), tuple(split_routes)),
            M.StageSpec("tail", tail.sha256, (M.InputSpec(ti.name, ti.dtype, ti.shape, 4),),
                        tuple(M.Route(o, CLIENT) for o in tail.output_names)))
        for node, stages in [(hub, hub_stages), *tile_stages.items()]:
            r = fleet.cmd.command(node, M.Deploy(cid(), "", "tiles", 0, tuple(stages)))
            assert r["ok"], r
        client = Client()
        try:
            x = np.random.default_rng(3).standard_normal((1, 32, 32, 3)).astype(np.float32)
            for i in range(4):
                client.send(fleet.data(hub), "tiles", "split", {"input": x}, f"t{i}")
            for _ in range(4):
                h, arrs = client.recv()
                assert h.kind == "result", h.error
                np.testing.assert_array_equal(arrs[0], run_whole(chain.model, [x])[0])
        finally:
            client.close()


def test_bad_commands_get_error_replies(mosquitto, tmp_path: Path) -> None:
    with Fleet(mosquitto.url, tmp_path, 1) as fleet:
        cmd = fleet.cmd
        garbage = [b"\xff\x00not json", b"[1,2]", b'{"type": "deploy"}',
                   json.dumps({"type": "warp", "v": 1, "id": "w", "reply_to": cmd.reply_topic}
                              ).encode(),
                   json.dumps({"type": "ping", "v": 2, "id": "v2", "reply_to": cmd.reply_topic}
                              ).encode(),
                   json.dumps({"type": "deploy", "v": 1, "id": "d", "reply_to": cmd.reply_topic,
                               "deployment": "x", "epoch": "one", "stages": []}).encode()]
        for g in garbage:
            cmd.publish_raw("n0", g)
        replies = [cmd.replies.get(timeout=10) for _ in garbage]
        assert all(not r["ok"] and r["error"] and r["node"] == "n0" for r in replies), replies
        # replies without a readable reply_to went to nodes/n0/replies with an empty id
        assert sorted(r["id"] for r in replies) == ["", "", "", "d", "v2", "w"]
        unknown = cmd.command("n0", M.Undeploy(cid(), "", "nope"))
        assert unknown["code"] == "unknown_deployment"
        sha = "ab" * 32
        missing = cmd.command("n0", M.Deploy(cid(), "", "x", 0, (M.StageSpec(
            "s", sha, (M.InputSpec("i", "float32", (1, 4)),)),)))
        assert missing["code"] == "missing_parts" and missing["result"]["missing"] == [sha]
        assert cmd.command("n0", M.Ping(cid(), ""))["ok"]
        errors = cmd.wait_for(lambda: cmd.metrics.get("n0", {}).get("errors", {}).get(
            "bad_command", 0) >= 4 and cmd.metrics["n0"]["errors"], 10, "error counters")
        assert errors["bad_version"] == 2 and errors["unknown_deployment"] == 1
        assert errors["missing_parts"] == 1
        assert fleet.agents["n0"].alive()


def test_profile_and_bandwidth_probe(mosquitto, tmp_path: Path) -> None:
    chain = three_parts()
    with Fleet(mosquitto.url, tmp_path, 2) as fleet:
        with ServiceClient(fleet.service("n0")) as svc:
            for p in chain.parts:
                svc.upload(p.data)
        shas = [p.sha256 for p in chain.parts]
        r = fleet.cmd.command("n0", M.Profile(cid(), "", tuple(shas), repetitions=3))
        assert r["ok"], r
        assert set(r["result"]["median_s"]) == set(shas)
        assert all(0 < t < 1 for t in r["result"]["median_s"].values())
        r = fleet.cmd.command("n0", M.Probe(cid(), "", fleet.service("n1"), 2_000_000, 3))
        assert r["ok"], r
        assert r["result"]["bandwidth_bps"] > 1e8 and r["result"]["rtt_s"] < 0.1


def test_data_plane_survives_broker_restart(mosquitto, tmp_path: Path) -> None:
    chain = three_parts()
    with Fleet(mosquitto.url, tmp_path, 1) as fleet:
        # the whole chain on n0
        with ServiceClient(fleet.service("n0")) as svc:
            for p in chain.parts:
                svc.upload(p.data)
        ep = fleet.data("n0")
        stages = tuple(M.StageSpec(
            f"s{k}", p.sha256, inputs_of(p),
            tuple(M.Route(o, CLIENT if k == 2 else ep, "" if k == 2 else f"s{k + 1}")
                  for o in p.output_names)) for k, p in enumerate(chain.parts))
        assert fleet.cmd.command("n0", M.Deploy(cid(), "", "c", 0, stages))["ok"]
        fleet.cmd.close()
        mosquitto.stop()
        client = Client()
        try:
            x = np.ones((1, 32, 32, 3), np.float32)
            client.send(ep, "c", "s0", {"input": x}, "during-outage")
            h, arrs = client.recv()
            assert h.kind == "result"
            np.testing.assert_array_equal(arrs[0], run_whole(chain.model, [x])[0])
        finally:
            client.close()
        mosquitto.start()
        from tests.node.harness import Commander
        fleet.cmd = Commander(mosquitto.url)
        t = time.monotonic()
        fleet.cmd.wait_online("n0", timeout=30)
        assert fleet.cmd.command("n0", M.StatusQuery(cid(), ""))["result"]["deployments"] == {
            "c": {"0": ["s0", "s1", "s2"]}}
        assert time.monotonic() - t < 30


def test_embedded_broker_chain_and_last_will(embedded_broker, tmp_path: Path) -> None:
    chain = three_parts()
    with Fleet(embedded_broker.url, tmp_path, 3) as fleet:
        nodes = deploy_chain_on(fleet, chain)
        client = Client()
        try:
            x = np.random.default_rng(5).standard_normal((1, 32, 32, 3)).astype(np.float32)
            client.send(fleet.data(nodes[0]), "chain", "s0", {"input": x})
            h, arrs = client.recv()
            np.testing.assert_array_equal(arrs[0], run_whole(chain.model, [x])[0])
        finally:
            client.close()
        fleet.agents["n2"].kill()
        fleet.cmd.wait_for(lambda: fleet.cmd.status["n2"]["state"] == "offline", 15,
                           "Last Will of n2 via amqtt")
