"""MQTT payloads and deployment specs: one frozen type per message, JSON on the wire.

Every payload is a JSON object with "type" (the tag) and "v" (the version). `encode`
turns any message into bytes; `decode_command` / `decode` parse and validate at the edge
and raise WireError naming the field. Unknown keys are ignored so fields can be added.
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from node.errors import WireError
from node.wire.frames import CLIENT, DTYPES, Region

MSG_VERSION = 1
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
_SHA = re.compile(r"^[0-9a-f]{64}$")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise WireError(msg, code="bad_command")


def _region_ok(r: Region | None, what: str) -> None:
    if r is not None:
        _check(r[0] < r[1] and r[2] < r[3] and min(r) >= 0, f"{what}: empty region {list(r)}")


# ---- deployment specs -------------------------------------------------------------

@dataclass(frozen=True)
class TileSpec:
    """One spatial tile of a part, as in the slice manifest (full-tensor coordinates)."""

    input_region: Region
    output_region: Region
    crop: Region

    def __post_init__(self) -> None:
        for k in ("input_region", "output_region", "crop"):
            _region_ok(getattr(self, k), f"tile {k}")


@dataclass(frozen=True)
class InputSpec:
    """A named stage input: full shape and dtype, and how many region pieces make it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    pieces: int = 1

    def __post_init__(self) -> None:
        _check(self.dtype in DTYPES, f"input {self.name!r}: unsupported dtype {self.dtype!r}")
        _check(self.pieces >= 1, f"input {self.name!r}: pieces must be >= 1")
        _check(all(d >= 0 for d in self.shape), f"input {self.name!r}: negative dimension")


@dataclass(frozen=True)
class Route:
    """Send tensor `tensor` (a stage output or input) to `to` (an endpoint or "client").

    `region` (full-tensor coordinates) is sliced out before sending; None sends all this
    stage holds. `name` renames the tensor for the receiving stage (default: same name).
    """

    tensor: str
    to: str
    stage: str = ""
    name: str = ""
    region: Region | None = None

    def __post_init__(self) -> None:
        _check(self.to == CLIENT or self.to.startswith(("tcp://", "ipc://", "inproc://")),
               f"route of {self.tensor!r}: destination {self.to!r} is not an endpoint")
        _region_ok(self.region, f"route of {self.tensor!r}")

    @property
    def dest_name(self) -> str:
        return self.name or self.tensor


@dataclass(frozen=True)
class StageSpec:
    """One stage on this node: run part `part` (sha256) on whole tensors or on one tile.

    `part` None makes a forward stage: it gathers its inputs and routes them unchanged.
    """

    id: str
    part: str | None
    inputs: tuple[InputSpec, ...]
    routes: tuple[Route, ...] = ()
    tile: TileSpec | None = None
    threads: int = 0  # 0: the node's default (tile stages default to 1, see DESIGN.md)

    def __post_init__(self) -> None:
        _check(bool(self.id), "stage id must not be empty")
        _check(self.part is None or bool(_SHA.match(self.part)),
               f"stage {self.id!r}: part must be a lowercase sha256 hex digest")
        _check(bool(self.inputs), f"stage {self.id!r}: no inputs")
        names = [i.name for i in self.inputs]
        _check(len(set(names)) == len(names), f"stage {self.id!r}: duplicate input names")
        _check(self.threads >= 0, f"stage {self.id!r}: threads must be >= 0")
        _check(self.tile is None or self.part is not None,
               f"stage {self.id!r}: a tile stage needs a part")


# ---- commands (topic nodes/<id>/cmd) and replies ----------------------------------

@dataclass(frozen=True)
class Deploy:
    id: str
    reply_to: str
    deployment: str
    epoch: int
    stages: tuple[StageSpec, ...]
    TYPE = "deploy"

    def __post_init__(self) -> None:
        ids = [s.id for s in self.stages]
        _check(len(set(ids)) == len(ids), f"deployment {self.deployment!r}: duplicate stage ids")
        _check(self.epoch >= 0, "epoch must be >= 0")


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
        _check(all(_SHA.match(p) for p in self.parts), "profile: parts must be sha256 digests")
        _check(1 <= self.repetitions <= 1000, "profile: repetitions must be in 1..1000")


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
        _check(0 < self.nbytes <= 64 * 1024 * 1024, "probe: nbytes must be in 1..64 MiB")
        _check(1 <= self.repetitions <= 100, "probe: repetitions must be in 1..100")


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
    result: dict[str, Any] = field(default_factory=dict)
    TYPE = "reply"


# ---- announcements ----------------------------------------------------------------

@dataclass(frozen=True)
class Status:
    node: str
    state: str  # "online" | "offline"
    time: float = 0.0
    agent_version: str = ""
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
    TYPE = "resources"


@dataclass(frozen=True)
class Metrics:
    node: str
    time: float
    uptime_s: float
    rss_bytes: int
    stages: dict[str, Any]  # "deployment/epoch/stage" -> {frames, latency_*_s, queue, ...}
    errors: dict[str, int]  # error code -> count since start
    frames_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    TYPE = "metrics"


MESSAGES: dict[str, type] = {m.TYPE: m for m in (Reply, Status, Resources, Metrics)}


# ---- encoding and validation ------------------------------------------------------

def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def to_dict(msg: Any) -> dict[str, Any]:
    """A message as a JSON-ready dict with its type tag and version."""
    return {"type": msg.TYPE, "v": MSG_VERSION, **_jsonable(asdict(msg))}


def encode(msg: Any) -> bytes:
    """Any message -> JSON bytes."""
    return json.dumps(to_dict(msg), separators=(",", ":")).encode()


def _convert(tp: Any, v: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return v
    if origin in (typing.Union, types.UnionType):
        for alt in typing.get_args(tp):
            try:
                return _convert(alt, v, where)
            except WireError:
                continue
        raise WireError(f"{where}: {v!r} is not a valid {tp}", code="bad_command")
    if tp is type(None):
        _check(v is None, f"{where}: expected null")
        return None
    if is_dataclass(tp):
        _check(isinstance(v, dict), f"{where}: expected an object")
        return _build(tp, v, where)
    if origin is tuple:
        args = typing.get_args(tp)
        _check(isinstance(v, list), f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], x, f"{where}[{i}]") for i, x in enumerate(v))
        _check(len(v) == len(args), f"{where}: expected {len(args)} items")
        return tuple(_convert(a, x, f"{where}[{i}]") for i, (a, x) in enumerate(zip(args, v, strict=True)))
    if origin is dict:
        _check(isinstance(v, dict), f"{where}: expected an object")
        return dict(v)
    if tp is float:
        _check(type(v) in (int, float), f"{where}: expected a number")
        return float(v)
    if tp is int:
        _check(type(v) is int, f"{where}: expected an integer")
        return v
    _check(type(v) is tp, f"{where}: expected {tp.__name__}, got {type(v).__name__}")
    return v


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in d:
            kwargs[f.name] = _convert(hints[f.name], d[f.name], f"{where}.{f.name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required field
        raise WireError(f"{where}: {exc}", code="bad_command") from None


def _load(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}",
                        code="oversized")
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"payload is not JSON: {exc}", code="bad_command") from None
    if not isinstance(d, dict):
        raise WireError("payload is not a JSON object", code="bad_command")
    return d


def decode_command(payload: bytes) -> Command:
    """Validate a command payload; WireError.reply holds reply_to when it was readable."""
    d = _load(payload)
    reply = d.get("reply_to") if isinstance(d.get("reply_to"), str) else None
    request = d.get("id") if isinstance(d.get("id"), str) else None
    try:
        if d.get("v") != MSG_VERSION:
            raise WireError(f"unknown message version {d.get('v')!r}", code="bad_version")
        cls = COMMANDS.get(d.get("type"))  # type: ignore[arg-type]
        if cls is None:
            raise WireError(f"unknown command type {d.get('type')!r}", code="bad_command")
        return _build(cls, d, cls.TYPE)
    except WireError as exc:
        raise WireError(str(exc), code=exc.code, reply=reply, request=request) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise WireError(f"bad command: {exc}", code="bad_command", reply=reply,
                        request=request) from None


def decode(payload: bytes) -> Any:
    """Validate any payload (command, reply, status, resources, metrics)."""
    d = _load(payload)
    if d.get("type") in COMMANDS:
        return decode_command(payload)
    cls = MESSAGES.get(d.get("type"))  # type: ignore[arg-type]
    if cls is None or d.get("v") != MSG_VERSION:
        raise WireError(f"unknown message {d.get('type')!r} v{d.get('v')!r}", code="bad_command")
    return _build(cls, d, cls.TYPE)
