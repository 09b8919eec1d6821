"""`tilefleet-node`: parse flags, configure logging, run the agent until a signal."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from pathlib import Path

from node import config
from node.errors import NodeError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (docs/cli.md)
        sys.stderr.write(f"tilefleet-node: {message}\n")
        raise SystemExit(2)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="tilefleet-node", description="tilefleet node agent")
    p.add_argument("--name", required=True, help="node id (letters, digits, _ . -)")
    p.add_argument("--broker", required=True, help="mqtt://host:port")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--board", help="board file node/boards/BOARD.toml")
    g.add_argument("--config", help="a board file path")
    p.add_argument("--data-port", type=int, help="data port (service = port+1; 0 = any)")
    p.add_argument("--host", help="address to bind and advertise (0.0.0.0: all)")
    p.add_argument("--state-dir", default="~/.tilefleet/node", help="part store directory")
    p.add_argument("--fleet", default="default")
    p.add_argument("--threads", type=int, help="interpreter threads per layer-range stage")
    p.add_argument("--emulate-speed", type=float, metavar="F",
                   help="pad every interpreter run to 1/F its time (0 < F <= 1: a slower "
                        "board without root; approximate, reported as 'padded')")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if not _NAME.match(args.name):
            raise NodeError(f"invalid node name {args.name!r} (letters, digits, _ . - only)")
        if not _NAME.match(args.fleet):
            raise NodeError(f"invalid fleet name {args.fleet!r}")
        from node.control import parse_broker_url

        parse_broker_url(args.broker)
        cfg = (config.for_board(args.board) if args.board else
               config.load(args.config) if args.config else config.default())
        cfg = cfg.override(data_port=args.data_port, host=args.host, threads=args.threads,
                           emulate_speed=args.emulate_speed)
        from node import pacing

        pacing.set_speed(cfg.agent.emulate_speed)
        from node.agent import build_agent

        agent = build_agent(args.name, cfg, Path(args.state_dir).expanduser(), args.broker,
                            args.fleet)
        agent.start()
    except NodeError as exc:
        sys.stderr.write(f"tilefleet-node: {exc}\n")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    padded = (
        f" (padded to speed {cfg.agent.emulate_speed:g})" if cfg.agent.emulate_speed < 1 else ""
    )
    print(f"tilefleet-node {args.name}: data {agent.dataplane.data_endpoint} "
          f"service {agent.dataplane.service_endpoint}{padded}", flush=True)
    agent.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
