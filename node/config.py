"""Board files (`node/boards/<board>.toml`) loaded into frozen, validated records.

`[board]` holds facts the planner uses before it has measured anything; `[agent]` holds
how the agent runs there. Command-line flags override `[agent]` via `override`.
The board files are package data of `node` (found through importlib.resources), so a
plain, non-editable `pip install .` carries them.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, fields, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from node.errors import ConfigError

KNOWN_DELEGATES = ("xnnpack", "edgetpu", "gpu")


@dataclass(frozen=True)
class BoardFacts:
    """What the board is: used as priors until the node is profiled."""

    name: str
    description: str = ""
    cores: int = 1
    memory_mb: int = 1024
    frequency_mhz: int = 0
    speed_prior: float = 1.0  # relative compute speed, Raspberry Pi 4 = 1.0
    accelerators: tuple[str, ...] = ()
    # the board's published speed on a reference workload, which the testbed calibrates
    # its emulated boards against (planner/testbed/calibrate.py): ms per inference
    # on `reference_threads` threads, the workload it was measured on, and where from
    reference_ms: float = 0.0
    reference_threads: int = 1
    reference_workload: str = ""
    reference_source: str = ""


@dataclass(frozen=True)
class AgentSettings:
    """How the agent runs on the board."""

    threads: int = 1
    tile_threads: int = 1  # one thread per tile interpreter (docs/runtimes.md, threads)
    memory_budget_mb: int = 512
    delegates: tuple[str, ...] = ("xnnpack",)
    host: str = "0.0.0.0"
    data_port: int = 5555
    queue_size: int = 8
    hwm: int = 16
    max_message_mb: int = 256
    max_part_mb: int = 512  # the largest part an upload may declare (node/store.py)
    store_limit_mb: int = 4096  # all stored parts and uploads in progress together
    metrics_interval_s: float = 2.0
    benchmark_s: float = 0.2
    emulate_speed: float = 1.0  # < 1: pad every interpreter run to 1/F its time (node/pacing.py)


@dataclass(frozen=True)
class NodeConfig:
    board: BoardFacts
    agent: AgentSettings
    source: str = "<defaults>"

    def override(self, **flags: Any) -> NodeConfig:
        """Replace agent settings with the flags that are not None (validated)."""
        given = {k: v for k, v in flags.items() if v is not None}
        names = {f.name for f in fields(AgentSettings)}
        for k in given:
            if k not in names:
                raise ConfigError(f"unknown agent setting {k!r}")
        agent = replace(self.agent, **given)
        _validate_agent(agent, "command line")
        return replace(self, agent=agent)


def config_dir() -> Path:
    """The board files' folder, node/boards/ (TILEFLEET_CONFIG_DIR overrides, for debugging)."""
    env = os.environ.get("TILEFLEET_CONFIG_DIR")
    # setuptools installs packages as plain folders, so the resource is a real path
    return Path(env) if env else Path(str(files("node").joinpath("boards")))


def boards() -> list[str]:
    """Names of the board files available."""
    return sorted(p.stem for p in config_dir().glob("*.toml"))


def _typed(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    kwargs = {}
    known = {f.name: f for f in fields(cls)}
    for key, value in table.items():
        f = known.get(key)
        if f is None:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(known)})")
        want = f.type if isinstance(f.type, str) else f.type.__name__
        if want.startswith("tuple"):
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ConfigError(f"{where}.{key}: expected a list of strings, got {value!r}")
            value = tuple(value)
        elif want == "float":  # a string once passed here, then failed a comparison
            if type(value) not in (int, float) or not math.isfinite(value):
                raise ConfigError(f"{where}.{key}: expected a finite number, got {value!r}")
            value = float(value)
        elif want in ("int", "str") and type(value).__name__ != want:
            raise ConfigError(f"{where}.{key}: expected {want}, got {value!r}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _validate_agent(a: AgentSettings, where: str) -> None:
    checks = [("threads", a.threads >= 1), ("tile_threads", a.tile_threads >= 1),
              ("memory_budget_mb", a.memory_budget_mb > 0), ("queue_size", a.queue_size >= 1),
              ("hwm", a.hwm >= 1), ("max_message_mb", a.max_message_mb >= 1),
              ("max_part_mb", a.max_part_mb >= 1),
              ("store_limit_mb", a.store_limit_mb >= a.max_part_mb),
              ("data_port", 0 <= a.data_port <= 65534),
              ("metrics_interval_s", a.metrics_interval_s > 0),
              ("benchmark_s", a.benchmark_s >= 0),
              ("emulate_speed", 0 < a.emulate_speed <= 1),
              ("delegates", all(d in KNOWN_DELEGATES for d in a.delegates))]
    for key, ok in checks:
        if not ok:
            raise ConfigError(f"{where}: agent.{key} has an invalid value "
                              f"{getattr(a, key)!r}")


def load(path: str | Path) -> NodeConfig:
    """Read and validate one board file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read board file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    for key in data:
        if key not in ("board", "agent"):
            raise ConfigError(f"{path}: unknown table [{key}]")
    if not isinstance(data.get("board"), dict) or "name" not in data["board"]:
        raise ConfigError(f"{path}: missing key board.name")
    board = _typed(BoardFacts, data["board"], f"{path}: board")
    agent = _typed(AgentSettings, data.get("agent", {}), f"{path}: agent")
    if board.cores < 1 or board.memory_mb < 1 or board.speed_prior <= 0:
        raise ConfigError(f"{path}: board.cores, board.memory_mb and board.speed_prior "
                          "must be positive")
    _validate_agent(agent, str(path))
    return NodeConfig(board, agent, str(path))


def for_board(name: str) -> NodeConfig:
    """The board file `node/boards/<name>.toml`."""
    path = config_dir() / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown board {name!r} (known: {', '.join(boards()) or 'none'})")
    return load(path)


def default() -> NodeConfig:
    """No board file: facts from this machine, default agent settings."""
    cores = os.cpu_count() or 1
    return NodeConfig(BoardFacts(name="generic", cores=cores), AgentSettings(threads=min(cores, 4)))
