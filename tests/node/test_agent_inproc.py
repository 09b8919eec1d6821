"""An agent in this process (no broker needed): deploy, chain, tiles, errors, epochs,
shared interpreters across epochs, the memory budget."""

from __future__ import annotations

import gc
import time
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from node import config
from node.agent import Agent, build_agent
from node.errors import DeployError
from node.runtime import RuntimeSettings, run_whole
from node.store import sha256_of
from node.wire import messages as M
from node.wire.frames import CLIENT
from node.wire.results import MemoryUse
from node.wire.service import ServiceClient
from tests.node.harness import Client
from tests.node.models import three_parts, tiled_head

pytest.importorskip("planner.model.cut")
from planner.model.cut import cut_range  # noqa: E402
from planner.model.graph import ModelGraph  # noqa: E402
from planner.modelbuild import recipes  # noqa: E402


def spec_inputs(part) -> tuple[M.InputSpec, ...]:
    return tuple(M.InputSpec(t.name, t.dtype, t.shape) for t in part.inputs)


def deploy_chain(agent: Agent, chain, name: str = "chain", epoch: int = 0) -> None:
    ep = agent.dataplane.data_endpoint
    with ServiceClient(agent.dataplane.service_endpoint) as svc:
        for p in chain.parts:
            svc.upload(p.data)
    stages = []
    for k, p in enumerate(chain.parts):
        last = k == len(chain.parts) - 1
        routes = tuple(M.Route(o, CLIENT if last else ep, "" if last else f"s{k + 1}")
                       for o in p.output_names)
        stages.append(M.StageSpec(f"s{k}", p.sha256, spec_inputs(p), routes))
    agent.handle(M.Deploy("c1", "", name, epoch, tuple(stages)))


def sample(dtype: str, rng: np.random.Generator) -> np.ndarray:
    if dtype == "int8":
        return rng.integers(-128, 128, (1, 32, 32, 3), dtype=np.int8)
    return rng.standard_normal((1, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_chain_matches_whole_model(agent: Agent, client: Client, dtype: str) -> None:
    chain = three_parts(dtype)
    deploy_chain(agent, chain)
    rng = np.random.default_rng(1)
    for i in range(3):
        x = sample(dtype, rng)
        client.send(agent.dataplane.data_endpoint, "chain", "s0", {"input": x}, f"r{i}")
        h, arrs = client.recv()
        assert h.kind == "result" and h.request == f"r{i}"
        want = run_whole(chain.model, [x], RuntimeSettings(threads=1))[0]
        assert h.tensors[0].name == chain.parts[-1].output_names[0]
        np.testing.assert_array_equal(arrs[0], want)
    stats = agent.metrics().stages
    assert stats["chain/0/s1"].frames == 3


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_tiles_2x2_match_whole_model(agent: Agent, client: Client, dtype: str) -> None:
    chain, layout = tiled_head(dtype)
    head, tail = chain.parts
    ep = agent.dataplane.data_endpoint
    with ServiceClient(agent.dataplane.service_endpoint) as svc:
        svc.upload(head.data)
        svc.upload(tail.data)
    (mid,) = head.output_names
    stages = [M.StageSpec("split", None, spec_inputs(head), tuple(
        M.Route("input", ep, f"t{i}", region=t.input_region) for i, t in enumerate(layout.tiles)))]
    for i, t in enumerate(layout.tiles):
        stages.append(M.StageSpec(f"t{i}", head.sha256, spec_inputs(head),
                                  (M.Route(mid, ep, "tail"),),
                                  tile=M.TileSpec(t.input_region, t.output_region, t.crop)))
    tail_in = tail.inputs[0]
    stages.append(M.StageSpec("tail", tail.sha256,
                              (M.InputSpec(tail_in.name, tail_in.dtype, tail_in.shape, 4),),
                              tuple(M.Route(o, CLIENT) for o in tail.output_names)))
    agent.handle(M.Deploy("c2", "", "tiles", 0, tuple(stages)))
    x = sample(dtype, np.random.default_rng(2))
    for i in range(2):
        client.send(ep, "tiles", "split", {"input": x}, f"q{i}")
        h, arrs = client.recv()
        assert h.kind == "result", h.error
        np.testing.assert_array_equal(arrs[0], run_whole(chain.model, [x])[0])
    # the next epoch shares each tile's (resized) interpreter: still exact
    again = agent.handle(M.Deploy("c3", "", "tiles", 1, tuple(stages)))
    assert again.loaded == () and again.reused == ("t0", "t1", "t2", "t3", "tail")
    client.send(ep, "tiles", "split", {"input": x}, "e1", epoch=1)
    h, arrs = client.recv()
    assert h.kind == "result" and h.epoch == 1, h.error
    np.testing.assert_array_equal(arrs[0], run_whole(chain.model, [x])[0])


def test_a_lone_tile_runs_with_the_boards_threads_several_with_tile_threads(
        tmp_path: Path, client: Client) -> None:
    # the planner scales op times profiled at the board's `threads` by a tile's MACs, so
    # a node's only tile must run that way; several tiles in one process use tile_threads
    cfg = config.for_board("laptop").override(benchmark_s=0.0, threads=2)
    a = build_agent("threads", cfg, tmp_path / "state")
    a.start()
    try:
        chain, layout = tiled_head("float32")
        head = chain.parts[0]
        (mid,) = head.output_names
        with ServiceClient(a.dataplane.service_endpoint) as svc:
            svc.upload(head.data)

        def tile(i: int) -> M.StageSpec:
            t = layout.tiles[i]
            return M.StageSpec(f"t{i}", head.sha256, spec_inputs(head), (M.Route(mid, CLIENT),),
                               tile=M.TileSpec(t.input_region, t.output_region, t.crop))

        a.handle(M.Deploy("d1", "", "lone", 0, (tile(0),)))
        a.handle(M.Deploy("d2", "", "many", 0, tuple(tile(i) for i in range(4))))
        assert {k.threads for k in a.deployments._running("lone")} == {2}
        assert {k.threads for k in a.deployments._running("many")} == {1}
        x = sample("float32", np.random.default_rng(5))
        t0 = layout.tiles[0]
        client.send(a.dataplane.data_endpoint, "lone", "t0", {"input": x}, "r")  # cut there
        h, arrs = client.recv()
        assert h.kind == "result", h.error
        y0, y1, x0, x1 = t0.output_region
        np.testing.assert_array_equal(arrs[0], run_whole(head.data, [x])[0][:, y0:y1, x0:x1])
    finally:
        a.stop()


def test_errors_reach_the_client(agent: Agent, client: Client) -> None:
    chain = three_parts()
    deploy_chain(agent, chain)
    ep = agent.dataplane.data_endpoint
    x = np.zeros((1, 32, 32, 3), np.float32)
    cases = [
        (dict(deployment="nope", stage="s0", tensors={"input": x}), "unknown_deployment"),
        (dict(deployment="chain", stage="s0", tensors={"input": x}, epoch=7), "unknown_epoch"),
        (dict(deployment="chain", stage="zz", tensors={"input": x}), "unknown_stage"),
        (dict(deployment="chain", stage="s0", tensors={"input": x.astype(np.int8)}),
         "wrong_tensor"),
        (dict(deployment="chain", stage="s0", tensors={"input": x[:, :16]}), "wrong_tensor"),
        (dict(deployment="chain", stage="s0", tensors={"other": x}), "wrong_tensor"),
    ]
    for kwargs, code in cases:
        client.send(ep, **kwargs)
        h, _ = client.recv()
        assert h.kind == "error" and h.error["code"] == code, (kwargs, h.error)
    # a frame whose size does not match its header
    from node.wire import frames as F
    h = F.Header("data", "chain", 0, "bad", "s0", client.reply,
                 (F.TensorMeta("input", "float32", (1, 32, 32, 3), (1, 32, 32, 3)),))
    client.send_frames(ep, [F.encode(h, [x])[0], b"\0" * 10])
    eh, _ = client.recv()
    assert eh.error["code"] == "size_mismatch" and eh.request == "bad"
    client.send_frames(ep, [b'{"v": 99, "reply": "%s"}' % client.reply.encode()])
    assert client.recv()[0].error["code"] == "bad_version"
    errors = agent.metrics().errors
    assert errors["unknown_deployment"] == 1 and errors["wrong_tensor"] == 3
    # and it still works
    client.send(ep, "chain", "s0", {"input": x}, "ok")
    assert client.recv()[0].kind == "result"


def test_oversized_message_is_refused(tmp_path: Path, client: Client) -> None:
    cfg = config.for_board("laptop").override(benchmark_s=0.0, max_message_mb=1)
    a = build_agent("small", cfg, tmp_path / "s")
    a.start()
    try:
        x = np.zeros((1, 256, 256, 3), np.float32)  # 786 KB per frame, 2 frames
        client.send(a.dataplane.data_endpoint, "d", "s", {"a": x, "b": x})
        h, _ = client.recv()
        assert h.error["code"] == "oversized"
        assert a.metrics().errors["oversized"] == 1
    finally:
        a.stop()


def test_missing_and_corrupted_parts(agent: Agent) -> None:
    chain = three_parts()
    p = chain.parts[0]
    spec = M.StageSpec("s0", p.sha256, spec_inputs(p), ())
    with pytest.raises(DeployError) as e:
        agent.handle(M.Deploy("c", "", "d", 0, (spec,)))
    assert e.value.code == "missing_parts" and e.value.details["missing"] == [p.sha256]
    with ServiceClient(agent.dataplane.service_endpoint) as svc:
        corrupted = bytearray(p.data)
        corrupted[100] ^= 0xFF
        from node.errors import WireError
        with pytest.raises(WireError) as w:
            svc.upload(bytes(corrupted), sha=p.sha256)
        assert w.value.code == "sha256_mismatch"
        assert svc.missing([p.sha256]) == [p.sha256]
    assert agent.metrics().errors["sha256_mismatch"] == 1


def test_epochs_side_by_side_then_activate(agent: Agent, client: Client) -> None:
    chain = three_parts()
    deploy_chain(agent, chain, "e", epoch=1)
    deploy_chain(agent, chain, "e", epoch=2)
    ep = agent.dataplane.data_endpoint
    x = np.ones((1, 32, 32, 3), np.float32)
    for epoch in (1, 2):
        client.send(ep, "e", "s0", {"input": x}, f"r{epoch}", epoch=epoch)
        h, _ = client.recv()
        assert h.kind == "result" and h.epoch == epoch
    assert agent.handle(M.Activate("a", "", "e", 2)).retired == (1,)
    client.send(ep, "e", "s0", {"input": x}, "old", epoch=1)
    assert client.recv()[0].error["code"] == "unknown_epoch"
    agent.handle(M.Undeploy("u", "", "e"))
    assert agent.deployments.summary() == {}


def test_store_survives_restart(tmp_path: Path) -> None:
    chain = three_parts()
    cfg = config.for_board("laptop").override(benchmark_s=0.0)
    a = build_agent("r", cfg, tmp_path / "st")
    a.start()
    with ServiceClient(a.dataplane.service_endpoint) as svc:
        svc.upload(chain.parts[0].data, chunk=1000)  # many chunks
    a.stop()
    b = build_agent("r", cfg, tmp_path / "st")
    b.start()
    try:
        with ServiceClient(b.dataplane.service_endpoint) as svc:
            assert svc.missing([p.sha256 for p in chain.parts]) == [
                chain.parts[1].sha256, chain.parts[2].sha256]
    finally:
        b.stop()


def test_random_frames_do_not_take_the_agent_down(agent: Agent, client: Client) -> None:
    import zmq

    chain = three_parts()
    deploy_chain(agent, chain)
    rng = np.random.default_rng(9)
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.connect(agent.dataplane.data_endpoint)
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(agent.dataplane.service_endpoint)
    for _ in range(200):
        frames = [rng.bytes(int(rng.integers(0, 64))) for _ in range(int(rng.integers(1, 4)))]
        push.send_multipart(frames)
        dealer.send_multipart(frames)
    for _ in range(200):  # every service request gets an answer, even garbage
        assert dealer.poll(5000)
        dealer.recv_multipart()
    push.close(linger=1000)
    dealer.close(linger=0)
    x = np.zeros((1, 32, 32, 3), np.float32)
    client.send(agent.dataplane.data_endpoint, "chain", "s0", {"input": x}, "after")
    assert client.recv()[0].kind == "result"
    assert sum(agent.metrics().errors.values()) >= 200


def deploy_result(agent: Agent, chain, name: str, epoch: int, reuse: bool = True) -> dict:
    """deploy_chain's stages as epoch `epoch` of `name`; the agent's deploy reply."""
    ep = agent.dataplane.data_endpoint
    with ServiceClient(agent.dataplane.service_endpoint) as svc:
        for p in chain.parts:
            if svc.missing([p.sha256]):
                svc.upload(p.data)
    stages = []
    for k, p in enumerate(chain.parts):
        last = k == len(chain.parts) - 1
        routes = tuple(M.Route(o, CLIENT if last else ep, "" if last else f"s{k + 1}")
                       for o in p.output_names)
        stages.append(M.StageSpec(f"s{k}", p.sha256, spec_inputs(p), routes))
    return agent.handle(M.Deploy(f"d{epoch}", "", name, epoch, tuple(stages), reuse=reuse))


def test_new_epoch_shares_unchanged_interpreters_and_frees_old_ones(
        agent: Agent, client: Client) -> None:
    chain = three_parts()
    ep, ids = agent.dataplane.data_endpoint, ("s0", "s1", "s2")
    first = deploy_result(agent, chain, "r", 1)
    assert first.loaded == ids and first.reused == ()
    one_copy = agent.deployments.memory().in_use_bytes
    assert one_copy > sum(len(p.data) for p in chain.parts)  # parts + arenas
    second = deploy_result(agent, chain, "r", 2)
    assert second.loaded == () and second.reused == ids
    assert agent.deployments.memory().in_use_bytes == one_copy  # no second interpreter
    rng = np.random.default_rng(5)
    xs = [sample("float32", rng) for _ in range(12)]
    for i, x in enumerate(xs):  # both epochs at once on the shared interpreters
        client.send(ep, "r", "s0", {"input": x}, f"q{i}", epoch=1 + i % 2)
    got = {}
    for _ in xs:
        h, arrs = client.recv()
        assert h.kind == "result", h.error
        got[h.request] = (h.epoch, arrs[0])
    for i, x in enumerate(xs):
        assert got[f"q{i}"][0] == 1 + i % 2
        np.testing.assert_array_equal(got[f"q{i}"][1], run_whole(chain.model, [x])[0])
    assert agent.handle(M.Activate("a", "", "r", 2)).retired == (1,)
    assert agent.deployments.memory().in_use_bytes == one_copy
    third = deploy_result(agent, chain, "r", 3, reuse=False)  # the old behaviour
    assert third.loaded == ids and third.reused == ()
    assert agent.deployments.memory().in_use_bytes == 2 * one_copy
    old = weakref.ref(agent.deployments._deps["r"][2]["s1"].runner)
    agent.handle(M.Activate("a", "", "r", 3))
    assert agent.deployments.memory().in_use_bytes == one_copy
    deadline = time.monotonic() + 5
    while old() is not None and time.monotonic() < deadline:  # workers exit, then freed
        gc.collect()
        time.sleep(0.02)
    assert old() is None
    client.send(ep, "r", "s0", {"input": xs[0]}, "after", epoch=3)
    h, arrs = client.recv()
    np.testing.assert_array_equal(arrs[0], run_whole(chain.model, [xs[0]])[0])
    agent.handle(M.Undeploy("u", "", "r"))
    assert agent.deployments.memory().in_use_bytes == 0


def test_memory_budget_refuses_a_load_and_the_agent_keeps_running(
        tmp_path: Path, client: Client) -> None:
    cfg = config.for_board("laptop").override(benchmark_s=0.0, memory_budget_mb=1)
    a = build_agent("tiny", cfg, tmp_path / "s")
    a.start()
    try:
        big = ModelGraph(recipes.mobilenet_v2_like(input_size=32, dtype="float32", seed=0))
        part = cut_range(big, 0, len(big.ops))  # ~14 MB of weights
        with ServiceClient(a.dataplane.service_endpoint) as svc:
            svc.upload(part.data)
        spec = M.StageSpec("all", part.sha256, spec_inputs(part),
                           tuple(M.Route(o, CLIENT) for o in part.output_names))
        with pytest.raises(DeployError) as e:
            a.handle(M.Deploy("big", "", "big", 1, (spec,)))
        msg = str(e.value)
        assert e.value.code == "memory_budget" and "\n" not in msg
        assert "node 'tiny'" in msg and "memory budget 1.0 MiB" in msg
        need = e.value.details["need_bytes"]
        assert e.value.details["fits_without_older_epochs"] is False  # too big on its own
        assert need > len(part.data) and f"needs {need / (1 << 20):.1f} MiB" in msg
        assert a.deployments.summary() == {} and a.deployments.memory().in_use_bytes == 0
        with pytest.raises(DeployError):  # the planner's profiling probes are held to it too
            a.handle(M.Deploy("p", "", "_chain-x", 0, (spec,)))
        assert a.deployments.memory().in_use_bytes == 0
        # the agent keeps running: a chain that fits loads and answers exactly
        chain = three_parts()
        deploy_result(a, chain, "small", 1)
        x = sample("float32", np.random.default_rng(3))
        client.send(a.dataplane.data_endpoint, "small", "s0", {"input": x}, "fits", epoch=1)
        h, arrs = client.recv()
        assert h.kind == "result"
        np.testing.assert_array_equal(arrs[0], run_whole(chain.model, [x])[0])
        # shared interpreters count once: a second epoch fits only when it reuses them
        one_copy = a.deployments.memory().in_use_bytes
        a.deployments.settings = replace(a.deployments.settings,
                                         memory_budget_bytes=one_copy * 3 // 2)
        assert deploy_result(a, chain, "small", 2).reused == ("s0", "s1", "s2")
        with pytest.raises(DeployError, match="memory budget") as e:
            deploy_result(a, chain, "small", 3, reuse=False)
        assert e.value.details["fits_without_older_epochs"] is True  # alone it would fit
        assert sorted(a.deployments.summary()["small"]) == [1, 2]
        assert a.handle(M.StatusQuery("q", "")).memory == MemoryUse(
            budget_bytes=one_copy * 3 // 2, in_use_bytes=one_copy)
    finally:
        a.stop()


def test_a_part_the_runtime_cannot_read_is_refused_and_nothing_is_loaded(agent: Agent) -> None:
    junk = b"TFL3" + bytes(range(256)) * 8  # not a flatbuffer model
    with ServiceClient(agent.dataplane.service_endpoint) as svc:
        svc.upload(junk)
    spec = M.StageSpec("s0", sha256_of(junk),
                       (M.InputSpec("input", "float32", (1, 32, 32, 3)),), ())
    with pytest.raises(DeployError) as e:
        agent.handle(M.Deploy("j", "", "junk", 1, (spec,)))
    assert e.value.code == "bad_part" and "stage 's0'" in str(e.value)
    assert "\n" not in str(e.value)
    assert agent.deployments.summary() == {} and agent.deployments.memory().in_use_bytes == 0
