"""Typed payload parts: per-stage metrics and the result of each command.

A command's `Reply.result` has the shape of its command's result type below (an error
reply's `result` is a plain dict of details, e.g. `missing`). The reply does not name its
command, so the receiver, which knows what it asked, decodes it with
`decode_result(command_type, result)`. Every type encodes to the keys the agents have
always sent; unknown keys are ignored and fields a newer agent added have defaults, so
older and newer peers keep talking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.errors import WireError
from node.wire.codec import build
from node.wire.codes import Code


@dataclass(frozen=True)
class StageMetrics:
    """One stage's figures in `Metrics.stages` (see node.metrics.StageStats).

    `run_total_s` and `busy_total_s` are cumulative over all `frames`; None when the
    agent is older than them (a reader then falls back to `run_mean_s`).
    """

    frames: int = 0
    errors: int = 0
    bytes_out: int = 0
    run_p50_s: float = 0.0
    run_p95_s: float = 0.0
    run_mean_s: float = 0.0  # over the last 256 frames
    run_total_s: float | None = None
    busy_total_s: float | None = None
    turnaround_p50_s: float = 0.0
    queue: int = 0  # frames waiting in the stage's queue
    pending: int = 0  # requests still gathering pieces
    part: str | None = None  # sha256; None for a forward stage
    tile: bool = False


@dataclass(frozen=True)
class MemoryUse:
    """The node's memory budget (0: none) and the bytes its interpreters are estimated to use."""

    budget_bytes: int = 0
    in_use_bytes: int = 0


@dataclass(frozen=True)
class DeployResult:
    deployment: str
    epoch: int
    stages: tuple[str, ...] = ()
    loaded: tuple[str, ...] = ()  # stages that got a new interpreter
    reused: tuple[str, ...] = ()  # stages sharing an older epoch's interpreter
    memory: MemoryUse = MemoryUse()


@dataclass(frozen=True)
class RetireResult:
    """Result of `undeploy` and `retire`: the epochs dropped."""

    deployment: str
    retired: tuple[int, ...] = ()


@dataclass(frozen=True)
class ActivateResult:
    """Result of `activate`: the older epochs dropped."""

    deployment: str
    epoch: int
    retired: tuple[int, ...] = ()


@dataclass(frozen=True)
class ProfileResult:
    median_s: dict[str, float]  # part sha256 -> median seconds per run
    times_s: dict[str, tuple[float, ...]]  # part sha256 -> every timed run
    settings: str = ""  # runtime/delegate/threads label


@dataclass(frozen=True)
class ProbeResult:
    """Median ping round trip and `nbytes` upload time to `endpoint`; bandwidth in bit/s."""

    rtt_s: float
    transfer_s: float
    nbytes: int
    bandwidth_bps: float
    endpoint: str = ""


@dataclass(frozen=True)
class PingResult:
    time: float


@dataclass(frozen=True)
class StatusResult:
    deployments: dict[str, dict[str, tuple[str, ...]]]  # name -> epoch -> stage ids
    parts: tuple[str, ...]
    memory: MemoryUse
    data_endpoint: str
    service_endpoint: str
    errors: dict[str, int]  # error code -> count since start
    frames_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


CommandResult = (DeployResult | RetireResult | ActivateResult | ProfileResult | ProbeResult
                 | PingResult | StatusResult)

# command TYPE (node.wire.messages.COMMANDS) -> the type of its result
RESULTS: dict[str, type] = {"deploy": DeployResult, "undeploy": RetireResult,
                            "activate": ActivateResult, "retire": RetireResult,
                            "profile": ProfileResult, "probe": ProbeResult, "ping": PingResult,
                            "status": StatusResult}


def decode_stages(stages: Any) -> dict[str, StageMetrics]:
    """`Metrics.stages` from a raw JSON object, leaving out malformed entries (a reader that
    must not stop at one bad agent); {} when it is not an object."""
    out: dict[str, StageMetrics] = {}
    if not isinstance(stages, dict):
        return out
    for key, st in stages.items():
        if isinstance(st, dict):
            try:
                out[key] = build(StageMetrics, st, f"stages[{key!r}]")
            except WireError:
                continue  # this entry only
    return out


def decode_result(command_type: str, result: Any) -> Any:
    """A reply's `result` (a JSON object) as the result type of `command_type`.

    WireError (code bad_message) when it lacks a field or has one of the wrong type.
    """
    cls = RESULTS.get(command_type)
    if cls is None:
        raise WireError(f"no result type for command {command_type!r}", code=Code.BAD_MESSAGE)
    if isinstance(result, cls):
        return result
    if not isinstance(result, dict):
        raise WireError(f"{command_type} result: expected an object", code=Code.BAD_MESSAGE)
    try:
        return build(cls, result, f"{command_type} result")
    except WireError as exc:
        raise WireError(str(exc), code=Code.BAD_MESSAGE) from None
