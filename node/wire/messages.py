"""MQTT payloads and deployment specs: one frozen type per message, JSON on the wire.

Every payload is a JSON object with "type" (the tag) and "v" (the version). `encode`
turns any message into bytes; `decode_command` / `decode` parse and validate at the edge
and raise WireError naming the field. Unknown keys are ignored so fields can be added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.errors import WireError
from node.wire.codec import MSG_VERSION, build, encode, load, to_dict
from node.wire.codes import Code
from node.wire.frames import is_endpoint
from node.wire.results import CommandResult, StageMetrics
from node.wire.specs import SHA256_RE, InputSpec, Route, StageSpec, TileSpec, check

__all__ = ["MSG_VERSION", "encode", "to_dict", "InputSpec", "Route", "StageSpec", "TileSpec",
           "COMMANDS", "MESSAGES", "decode_command", "decode"]


# ---- commands (topic nodes/<id>/cmd) and replies ----------------------------------

@dataclass(frozen=True)
class Deploy:
    """Load `stages` as `epoch` of `deployment`, next to the epochs already loaded.

    `reuse`: a stage whose part, tile and threads match a stage already loaded for the
    deployment (an older epoch) shares that stage's interpreter instead of loading a
    second one; false loads every stage afresh (a benchmark baseline).
    """

    id: str
    reply_to: str
    deployment: str
    epoch: int
    stages: tuple[StageSpec, ...]
    reuse: bool = True
    TYPE = "deploy"

    def __post_init__(self) -> None:
        ids = [s.id for s in self.stages]
        check(len(set(ids)) == len(ids), f"deployment {self.deployment!r}: duplicate stage ids")
        check(self.epoch >= 0, "epoch must be >= 0")


@dataclass(frozen=True)
class Undeploy:
    id: str
    reply_to: str
    deployment: str
    TYPE = "undeploy"


@dataclass(frozen=True)
class Activate:
    """Make `epoch` current: every older epoch of the deployment is dropped."""

    id: str
    reply_to: str
    deployment: str
    epoch: int
    TYPE = "activate"


@dataclass(frozen=True)
class Retire:
    id: str
    reply_to: str
    deployment: str
    epochs: tuple[int, ...]
    TYPE = "retire"


@dataclass(frozen=True)
class Profile:
    """Time each part (sha256, already in the store): median seconds of `repetitions`."""

    id: str
    reply_to: str
    parts: tuple[str, ...]
    repetitions: int = 5
    warmup: int = 1
    threads: int = 0
    TYPE = "profile"

    def __post_init__(self) -> None:
        check(all(SHA256_RE.match(p) for p in self.parts), "profile: parts must be sha256 digests")
        check(1 <= self.repetitions <= 1000, "profile: repetitions must be in 1..1000")


@dataclass(frozen=True)
class Probe:
    """Measure round-trip time and bandwidth to another node's service endpoint."""

    id: str
    reply_to: str
    endpoint: str
    nbytes: int = 1_000_000
    repetitions: int = 3
    TYPE = "probe"

    def __post_init__(self) -> None:
        check(is_endpoint(self.endpoint), "probe: endpoint is not a ZeroMQ endpoint")
        check(0 < self.nbytes <= 64 * 1024 * 1024, "probe: nbytes must be in 1..64 MiB")
        check(1 <= self.repetitions <= 100, "probe: repetitions must be in 1..100")


@dataclass(frozen=True)
class Ping:
    id: str
    reply_to: str
    TYPE = "ping"


@dataclass(frozen=True)
class StatusQuery:
    """Ask for deployments, stages and store contents."""

    id: str
    reply_to: str
    TYPE = "status"


COMMANDS: dict[str, type] = {c.TYPE: c for c in (Deploy, Undeploy, Activate, Retire, Profile,
                                                 Probe, Ping, StatusQuery)}
Command = Deploy | Undeploy | Activate | Retire | Profile | Probe | Ping | StatusQuery


@dataclass(frozen=True)
class Reply:
    """Answer to a command, published on the command's reply_to topic."""

    id: str
    ok: bool
    node: str = ""
    error: str | None = None
    code: str | None = None
    # the command's result type (node.wire.results; the receiver decodes it with
    # decode_result, knowing what it asked); an error reply's details as a plain dict
    result: dict[str, Any] | CommandResult = field(default_factory=dict)
    TYPE = "reply"


# ---- announcements ----------------------------------------------------------------

@dataclass(frozen=True)
class Status:
    node: str
    state: str  # "online" | "offline" | "degraded" (running but cannot serve: `reason`)
    time: float = 0.0
    agent_version: str = ""
    reason: str = ""
    TYPE = "status"


@dataclass(frozen=True)
class Resources:
    node: str
    board: str
    cores: int
    frequency_mhz: float
    memory_bytes: int
    memory_available_bytes: int
    memory_budget_bytes: int
    temperature_c: float | None
    load: float
    runtime: str
    runtime_version: str
    delegates: tuple[str, ...]
    speed_gflops: float
    speed_prior: float
    threads: int
    data_endpoint: str
    service_endpoint: str
    agent_version: str
    host: str = ""  # machine identity: agents with the same host share its CPU cores
    host_cores: int = 0  # logical cores of that machine (0: not reported)
    TYPE = "resources"


@dataclass(frozen=True)
class Metrics:
    node: str
    time: float
    uptime_s: float
    rss_bytes: int
    stages: dict[str, StageMetrics]  # "deployment/epoch/stage" -> its figures
    errors: dict[str, int]  # error code -> count since start
    frames_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    TYPE = "metrics"


MESSAGES: dict[str, type] = {m.TYPE: m for m in (Reply, Status, Resources, Metrics)}


def is_publish_topic(v: Any) -> bool:
    """Whether `v` is a topic a reply may be published on (paho raises on the others)."""
    if type(v) is not str or not v or "+" in v or "#" in v or "\0" in v:
        return False
    try:
        return len(v.encode()) <= 65535
    except UnicodeEncodeError:  # a lone surrogate
        return False


def decode_command(payload: bytes) -> Command:
    """Validate a command payload; WireError.reply holds reply_to when it was readable."""
    d = load(payload)
    reply = d.get("reply_to") if is_publish_topic(d.get("reply_to")) else None
    request = d.get("id") if isinstance(d.get("id"), str) else None
    try:
        if d.get("reply_to") not in (None, "") and reply is None:
            raise WireError(f"reply_to {ascii(d.get('reply_to'))[:80]} is not a topic to "
                            "publish on", code=Code.BAD_COMMAND)
        if d.get("v") != MSG_VERSION:
            raise WireError(f"unknown message version {d.get('v')!r}", code=Code.BAD_VERSION)
        cls = COMMANDS.get(d.get("type"))  # type: ignore[arg-type]
        if cls is None:
            raise WireError(f"unknown command type {d.get('type')!r}", code=Code.BAD_COMMAND)
        return build(cls, d, cls.TYPE)
    except WireError as exc:
        raise WireError(str(exc), code=exc.code, reply=reply, request=request) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise WireError(f"bad command: {exc}", code=Code.BAD_COMMAND, reply=reply,
                        request=request) from None


def decode(payload: bytes) -> Any:
    """Validate any payload (command, reply, status, resources, metrics)."""
    d = load(payload)
    if d.get("type") in COMMANDS:
        return decode_command(payload)
    cls = MESSAGES.get(d.get("type"))  # type: ignore[arg-type]
    if cls is None or d.get("v") != MSG_VERSION:
        raise WireError(f"unknown message {d.get('type')!r} v{d.get('v')!r}", code=Code.BAD_COMMAND)
    return build(cls, d, cls.TYPE)
