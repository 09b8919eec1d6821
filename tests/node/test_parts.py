"""Store, gather/stitch, board configs and the CLI's bad-input handling."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from node import config
from node.errors import ConfigError, StoreError, WireError
from node.gather import Gather, Want
from node.store import Store
from node.wire.frames import TensorMeta
from tests.node.harness import REPO


def test_store_chunks_verify_and_reload(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    sha = hashlib.sha256(data).hexdigest()
    s = Store(tmp_path)
    s.open()
    assert s.write_chunk(sha, len(data), 0, data[:4000], last=False) == 4000
    with pytest.raises(StoreError) as e:
        s.write_chunk(sha, len(data), 5000, data[5000:], last=True)
    assert e.value.code == "out_of_order" and e.value.details["expected"] == 4000
    s.write_chunk(sha, len(data), 4000, data[4000:], last=True)
    assert Store(tmp_path).open() == [sha]  # a new store (restart) finds it
    assert s.read_verified(sha) == data
    (tmp_path / "parts" / f"{sha}.tflite").write_bytes(b"tampered")
    with pytest.raises(StoreError, match="corrupted"):
        s.read_verified(sha)
    assert not s.has(sha)
    with pytest.raises(StoreError) as e:
        s.put("0" * 64, data)
    assert e.value.code == "sha256_mismatch" and not s.has("0" * 64)


def test_gather_stitches_pieces_in_any_order() -> None:
    full = np.arange(1 * 6 * 8 * 2, dtype=np.int16).reshape(1, 6, 8, 2)
    g = Gather({"x": Want("int16", full.shape, 4)})
    regions = [(0, 3, 0, 4), (3, 6, 4, 8), (0, 3, 4, 8), (3, 6, 0, 4)]
    out = None
    for i, r in enumerate(regions):
        piece = full[:, r[0]:r[1], r[2]:r[3]]
        out, _ = g.add("req", (TensorMeta("x", "int16", piece.shape, full.shape, r),), [piece])
        assert (out is None) == (i < 3)
    np.testing.assert_array_equal(out["x"], full)
    assert g.pending == 0


def test_gather_window_and_checks() -> None:
    full = np.zeros((1, 10, 10, 1), np.float32)
    g = Gather({"x": Want("float32", full.shape, 1)}, window=(2, 6, 0, 10))
    out, _ = g.add("r", (TensorMeta("x", "float32", full.shape, full.shape),), [full])
    assert out["x"].shape == (1, 4, 10, 1)  # a whole tensor is cut to the tile window
    with pytest.raises(WireError, match="region"):
        piece = full[:, 0:4]
        g.add("r", (TensorMeta("x", "float32", piece.shape, full.shape, (0, 4, 0, 10)),),
              [piece])
    with pytest.raises(WireError, match="unexpected tensor"):
        g.check(TensorMeta("y", "float32", full.shape, full.shape))
    g2 = Gather({"x": Want("float32", full.shape, 2)}, max_pending=1)
    half = full[:, :5]
    meta = TensorMeta("x", "float32", half.shape, full.shape, (0, 5, 0, 10))
    g2.add("a", (meta,), [half])
    assert g2.add("b", (meta,), [half]) == (None, ["a"])  # oldest evicted
    assert g2.expire(0.0, now=1e12) == ["b"]


def test_board_files_load_and_name_bad_keys(tmp_path: Path) -> None:
    for b in ("rpi3", "rpi4", "rpi5", "jetson_nano", "coral_devboard", "edge_server", "laptop"):
        cfg = config.for_board(b)
        assert cfg.board.name == b and cfg.agent.threads >= 1
    assert config.for_board("rpi3").agent.memory_budget_mb < 1024
    bad = tmp_path / "b.toml"
    bad.write_text('[board]\nname = "x"\ncores = "four"\n')
    with pytest.raises(ConfigError, match=r"b.toml: board.cores: expected int"):
        config.load(bad)
    bad.write_text('[board]\nname = "x"\n[agent]\nthreds = 2\n')
    with pytest.raises(ConfigError, match=r"agent.threds: unknown key"):
        config.load(bad)
    bad.write_text('[agent]\nthreads = 2\n')
    with pytest.raises(ConfigError, match="missing key board.name"):
        config.load(bad)
    with pytest.raises(ConfigError, match="agent.threads"):
        config.for_board("laptop").override(threads=0)
    with pytest.raises(ConfigError, match="unknown board"):
        config.for_board("cray")


@pytest.mark.parametrize("args, text", [
    (["--name", "a"], "required"),
    (["--name", "a b", "--broker", "mqtt://h:1"], "invalid node name"),
    (["--name", "a", "--broker", "http://h"], "expected mqtt://host:port"),
    (["--name", "a", "--broker", "mqtt://h:1", "--board", "nope"], "unknown board"),
    (["--name", "a", "--broker", "mqtt://h:1", "--threads", "0"], "agent.threads"),
    (["--name", "a", "--broker", "mqtt://h:1", "--config", "/nonexistent.toml"],
     "cannot read board file"),
])
def test_cli_bad_input_exits_2_with_one_line(args: list[str], text: str) -> None:
    r = subprocess.run([sys.executable, "-m", "node.cli", *args], capture_output=True,
                       text=True, cwd=REPO, timeout=30)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and text in r.stderr, r.stderr


def test_upload_starts_over_once_when_the_node_lost_the_partial_upload() -> None:
    # a scripted peer on a real socket: it acknowledges chunk 0, then answers the next
    # chunk with out_of_order (a restarted node) `losses` times
    import json
    import threading

    import zmq

    from node.wire.codes import Code
    from node.wire.service import ServiceClient

    def serve(sock: zmq.Socket, losses: int, seen: list[int]) -> None:
        while True:
            ident, head, *_ = sock.recv_multipart()
            req = json.loads(head)
            if req["op"] == "stop":
                sock.send_multipart([ident, json.dumps({"seq": req["seq"], "ok": True}).encode()])
                return
            seen.append(req["offset"])
            if req["offset"] > 0 and losses:
                losses -= 1
                rep = {"seq": req["seq"], "ok": False, "error": "lost", "code": Code.OUT_OF_ORDER}
            else:
                rep = {"seq": req["seq"], "ok": True, "next": req["offset"] + 4}
            sock.send_multipart([ident, json.dumps(rep).encode()])

    for losses, ok in ((1, True), (2, False)):
        ctx = zmq.Context.instance()
        server = ctx.socket(zmq.ROUTER)
        port = server.bind_to_random_port("tcp://127.0.0.1")
        seen: list[int] = []
        t = threading.Thread(target=serve, args=(server, losses, seen), daemon=True)
        t.start()
        moved: list[int] = []
        with ServiceClient(f"tcp://127.0.0.1:{port}", ctx, timeout_s=5) as svc:
            if ok:
                svc.upload(b"x" * 10, chunk=4, skip_if_present=False, on_chunk=moved.append)
                assert seen == [0, 4, 0, 4, 8] and sum(moved) == 10 and -4 in moved
            else:
                with pytest.raises(WireError) as e:
                    svc.upload(b"x" * 10, chunk=4, skip_if_present=False, on_chunk=moved.append)
                assert e.value.code == Code.OUT_OF_ORDER and seen == [0, 4, 0, 4]
            svc.request("stop")
        t.join(5)
        server.close(linger=0)
