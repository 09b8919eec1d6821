"""A throw-away Mosquitto on a free loopback port, for the benchmarks under tools/.

`set_tcp_nodelay true` by default: with Nagle on in the broker, its reply to a command
waits for the client's delayed ACK of the previous packet (~40 ms on Linux), so every
command round trip takes ~44 ms instead of < 1 ms; `nodelay=False` measures that case.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def start_mosquitto(workdir: Path, nodelay: bool = True
                    ) -> tuple[subprocess.Popen | None, str | None]:
    """(process, mqtt:// URL), or (None, None) when Mosquitto is not installed."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"set_tcp_nodelay {'true' if nodelay else 'false'}\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"mqtt://127.0.0.1:{port}"
