"""The embedded MQTT broker (amqtt) of the zero-setup demo.

    python -m planner.local.broker PORT [HOST]      (HOST default 127.0.0.1)


Run as its own process so the demo can stop it like any other child and so its event
loop never competes with the client's data path for the GIL.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys


def config(port: int, host: str = "127.0.0.1") -> dict:
    """amqtt configuration: one anonymous TCP listener."""
    return {"listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}}}


async def serve(port: int, host: str = "127.0.0.1") -> None:
    """Run the broker until SIGTERM/SIGINT."""
    from amqtt.broker import Broker

    broker = Broker(config(port, host))
    await broker.start()
    print(f"ready mqtt://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or not args[0].isdigit():
        sys.stderr.write("usage: python -m planner.local.broker PORT [HOST]\n")
        return 2
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(int(args[0]), *args[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
