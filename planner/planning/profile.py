"""Fleet profile (version 1): devices, links, where frames come from and where results go.

The profile is the hand-off between profiler and planner (PROFILE_AND_PLAN.md). Per-op
times come from measurements for a given model (by sha256) when present, otherwise
from an analytic model: MACs times an op-type factor over the calibrated speed, plus
activation bytes over memory throughput, plus a fixed per-op overhead.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from planner.errors import ProfileError
from planner.planning.jsonfile import read_json

VERSION = 1
TIERS = ("device", "edge", "cloud")
REFERENCE_SPEED = 2.0e9  # MAC/s of an rpi4 (speed prior 1.0) with XNNPACK, float32
DEFAULT_LINK = (12.5e6, 1e-3)  # 100 Mbit/s LAN, 1 ms

# Kernels are not equally efficient per MAC: depthwise and fully connected layers are
# memory-bound on small boards, element-wise ops cost per element, not per MAC.
OP_TYPE_FACTOR = {"DEPTHWISE_CONV_2D": 3.0, "FULLY_CONNECTED": 2.0, "AVERAGE_POOL_2D": 1.5,
                  "MAX_POOL_2D": 1.5, "MEAN": 1.5, "SOFTMAX": 2.0}


@dataclass(frozen=True)
class Device:
    """One device of the fleet and its cost parameters."""

    name: str
    board: str = "generic"
    tier: str = "device"
    cores: int = 1
    memory_bytes: int = 1 << 30
    speed: float = REFERENCE_SPEED  # MAC/s
    bytes_per_s: float = 4e9  # activation bytes moved per second
    op_overhead_s: float = 2e-5  # fixed cost per op (dispatch, cache misses)
    overhead_bytes: int = 4 << 20  # interpreter + arena slack per loaded part
    compute: bool = True  # False: only a source/sink (e.g. the planner laptop, "client")
    op_seconds: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    # Per-frame costs outside the interpreter (hand-off to the stage thread, message
    # encode/decode, gathering and slicing region pieces); 0 = not modelled.
    # per stage and frame (on the source: the client's per-frame cost)
    stage_overhead_s: float = 0.0
    piece_overhead_s: float = 0.0  # per region piece beyond the first gathered or sliced
    copy_s_per_byte: float = 0.0  # stitching gathered pieces, slicing regions out
    host: str = ""  # machine identity: devices on one host share its host_cores ("" = its own)
    host_cores: int = 0  # CPU cores of that host (0 = as many as it has devices)


@dataclass(frozen=True)
class Link:
    """A directed link: bandwidth in bytes/s and one-way latency in s."""

    bandwidth: float
    latency: float


@dataclass(frozen=True)
class Profile:
    """Devices, directed links (symmetric unless both directions given), source and sink."""

    devices: Mapping[str, Device]
    links: Mapping[tuple[str, str], Link]
    default_link: Link = Link(*DEFAULT_LINK)
    source: str = "client"
    sink: str = "client"

    def device(self, name: str) -> Device:
        """The device called `name`; PlanError-free lookup with a ProfileError naming it."""
        if name not in self.devices:
            raise ProfileError(
                f"unknown node {name!r} (profile has: {', '.join(sorted(self.devices))})"
            )
        return self.devices[name]

    def link(self, a: str, b: str) -> Link:
        """Link a -> b: the given direction, else the reverse, else the default link."""
        return self.links.get((a, b)) or self.links.get((b, a)) or self.default_link

    def transfer_seconds(self, a: str, b: str, nbytes: float) -> float:
        """Time to send nbytes from a to b: 0 on the same device or for 0 bytes."""
        if a == b or nbytes <= 0:
            return 0.0
        ln = self.link(a, b)
        return ln.latency + nbytes / ln.bandwidth

    def hosts(self) -> dict[str, tuple[int, list[str]]]:
        """Shared hosts: host -> (cores, devices on it); devices without a host are left out."""
        out: dict[str, tuple[int, list[str]]] = {}
        for n, d in self.devices.items():
            if d.host:
                cores, names = out.get(d.host, (0, []))
                out[d.host] = (max(cores, d.host_cores), [*names, n])
        return {h: (c or len(ns), ns) for h, (c, ns) in out.items()}

    def compute_devices(self) -> list[str]:
        """Names of devices that may run stages, in profile order."""
        return [n for n, d in self.devices.items() if d.compute]

    def to_json(self) -> dict:
        """The version-1 JSON document."""
        devs = {}
        for n, d in self.devices.items():
            rec = {
                "board": d.board,
                "tier": d.tier,
                "cores": d.cores,
                "memory_bytes": d.memory_bytes,
                "speed": d.speed,
                "bytes_per_s": d.bytes_per_s,
                "op_overhead_s": d.op_overhead_s,
                "overhead_bytes": d.overhead_bytes,
                "compute": d.compute,
            }
            for key, default in _OPTIONAL.items():  # written only when set: old hashes stay valid
                if getattr(d, key) != default:
                    rec[key] = getattr(d, key)
            if d.op_seconds:
                rec["op_seconds"] = {k: list(v) for k, v in d.op_seconds.items()}
            devs[n] = rec
        links = [{"from": a, "to": b, "bandwidth": ln.bandwidth, "latency": ln.latency}
                 for (a, b), ln in self.links.items()]
        return {
            "version": VERSION,
            "devices": devs,
            "links": links,
            "default_link": {
                "bandwidth": self.default_link.bandwidth,
                "latency": self.default_link.latency,
            },
            "source": self.source,
            "sink": self.sink,
        }

    def sha256(self) -> str:
        """Hash of the canonical JSON form; plans record it to detect a stale profile."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def with_measured(self, device: str, model_sha256: str, seconds: Iterable[float]) -> Profile:
        """A copy with measured per-op seconds for one device and model."""
        d = self.device(device)
        secs = tuple(float(s) for s in seconds)
        if not all(math.isfinite(s) and s >= 0 for s in secs):
            raise ProfileError(f"device {device!r}: measured op seconds must be finite and >= 0")
        merged = {**d.op_seconds, model_sha256: secs}
        return replace(self, devices={**self.devices, device: replace(d, op_seconds=merged)})

    def without(self, names: Iterable[str]) -> Profile:
        """A copy where the named devices do not compute (excluded nodes)."""
        devs = dict(self.devices)
        for n in names:
            devs[n] = replace(self.device(n), compute=False)
        return replace(self, devices=devs)


_OPTIONAL = {"stage_overhead_s": 0.0, "piece_overhead_s": 0.0, "copy_s_per_byte": 0.0, "host": "",
             "host_cores": 0}


def analytic_op_seconds(device: Device, op_type: str, macs: int, activation_bytes: int) -> float:
    """Predicted seconds of one op on a device that was not measured for this model."""
    factor = OP_TYPE_FACTOR.get(op_type, 1.0)
    return (
        macs * factor / device.speed + activation_bytes / device.bytes_per_s + device.op_overhead_s
    )


def op_seconds(device: Device, graph) -> list[float]:
    """Per-op seconds of `graph` on `device`: measured for this model's sha256, else analytic."""
    measured = device.op_seconds.get(graph.sha256)
    if measured is not None:
        if len(measured) != len(graph.ops):
            raise ProfileError(
                f"device {device.name!r}: op_seconds for model {graph.sha256[:12]} has "
                f"{len(measured)} entries, the model has {len(graph.ops)} ops"
            )
        return list(measured)
    return [analytic_op_seconds(device, op.type, op.macs, op.activation_bytes) for op in graph.ops]


# ---- reading and validation ---------------------------------------------------------------
def _num(
    rec: dict, key: str, where: str, default=None, positive: bool = True, integer: bool = False
):
    value = rec.get(key, default)
    if value is None:
        raise ProfileError(f"{where}: missing key {key!r}")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or (positive and value <= 0) or value < 0:
        kind = "an integer" if integer else "a number"
        raise ProfileError(
            f"{where}: key {key!r} must be {kind} {'> 0' if positive else '>= 0'}, got {value!r}"
        )
    return int(value) if integer else float(value)


def _device(name: str, rec: object, where: str) -> Device:
    w = f"{where}: devices.{name}"
    if not isinstance(rec, dict):
        raise ProfileError(f"{w}: must be an object")
    tier = rec.get("tier", "device")
    if tier not in TIERS:
        raise ProfileError(f"{w}: key 'tier' must be one of {', '.join(TIERS)}, got {tier!r}")
    secs = rec.get("op_seconds", {})
    if not isinstance(secs, dict):
        raise ProfileError(f"{w}: key 'op_seconds' must map model sha256 to a list of seconds")
    measured = {}
    for sha, lst in secs.items():
        ok = isinstance(lst, list) and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s >= 0
            for s in lst
        )
        if not ok:
            raise ProfileError(f"{w}: key 'op_seconds.{sha}' must be a list of numbers >= 0")
        measured[str(sha)] = tuple(float(s) for s in lst)
    base = Device(name)
    return Device(
        name=name,
        board=str(rec.get("board", base.board)),
        tier=tier,
        cores=_num(rec, "cores", w, base.cores, integer=True),
        memory_bytes=_num(rec, "memory_bytes", w, integer=True),
        speed=_num(rec, "speed", w, base.speed),
        bytes_per_s=_num(rec, "bytes_per_s", w, base.bytes_per_s),
        op_overhead_s=_num(rec, "op_overhead_s", w, base.op_overhead_s, positive=False),
        overhead_bytes=_num(
            rec, "overhead_bytes", w, base.overhead_bytes, positive=False, integer=True
        ),
        compute=bool(rec.get("compute", True)),
        op_seconds=measured,
        stage_overhead_s=_num(rec, "stage_overhead_s", w, 0.0, positive=False),
        piece_overhead_s=_num(rec, "piece_overhead_s", w, 0.0, positive=False),
        copy_s_per_byte=_num(rec, "copy_s_per_byte", w, 0.0, positive=False),
        host=str(rec.get("host", "")),
        host_cores=_num(rec, "host_cores", w, 0, positive=False, integer=True),
    )


def _link(rec: object, where: str) -> Link:
    if not isinstance(rec, dict):
        raise ProfileError(f"{where}: must be an object with 'bandwidth' and 'latency'")
    return Link(_num(rec, "bandwidth", where), _num(rec, "latency", where, 0.0, positive=False))


def profile_from_json(doc: object, where: str = "<profile>") -> Profile:
    """Validate a version-1 profile document; errors name the file and the key."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: a profile must be a JSON object")
    if doc.get("version") != VERSION:
        raise ProfileError(f"{where}: key 'version' must be {VERSION}, got {doc.get('version')!r}")
    devs = doc.get("devices")
    if not isinstance(devs, dict) or not devs:
        raise ProfileError(f"{where}: key 'devices' must be a non-empty object")
    devices = {str(n): _device(str(n), r, where) for n, r in devs.items()}
    links: dict[tuple[str, str], Link] = {}
    raw_links = doc.get("links", [])
    if not isinstance(raw_links, list):
        raise ProfileError(f"{where}: key 'links' must be a list")
    for i, rec in enumerate(raw_links):
        w = f"{where}: links[{i}]"
        if not isinstance(rec, dict):
            raise ProfileError(f"{w}: must be an object")
        for end in ("from", "to"):
            if rec.get(end) not in devices:
                raise ProfileError(f"{w}: key {end!r} names unknown device {rec.get(end)!r}")
        links[(rec["from"], rec["to"])] = _link(rec, w)
    default = (
        _link(doc["default_link"], f"{where}: default_link")
        if "default_link" in doc
        else Link(*DEFAULT_LINK)
    )
    ends = {}
    for key in ("source", "sink"):
        ends[key] = doc.get(key, next(iter(devices)))
        if ends[key] not in devices:
            raise ProfileError(f"{where}: key {key!r} names unknown device {ends[key]!r}")
    return Profile(devices, links, default, ends["source"], ends["sink"])


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file."""
    p = Path(path)
    return profile_from_json(read_json(p, "profile", ProfileError), str(p))


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write a profile as indented JSON."""
    Path(path).write_text(json.dumps(profile.to_json(), indent=2) + "\n")


# ---- priors from board files ---------------------------------------------------------------
def board_device(name: str, board_file: str | Path, tier: str | None = None) -> Device:
    """A Device from a board file (node/boards/<board>.toml): cores, memory budget, speed prior."""
    p = Path(board_file)
    try:
        doc = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{p}: cannot read board file ({exc})") from None
    board, agent = doc.get("board", {}), doc.get("agent", {})
    where = f"{p}: board"
    prior = _num(board, "speed_prior", where, 1.0)
    budget_mb = (
        _num(agent, "memory_budget_mb", f"{p}: agent", None)
        if "memory_budget_mb" in agent
        else _num(board, "memory_mb", where) / 2
    )
    guess = "cloud" if prior >= 20 else "edge" if prior >= 4 else "device"
    return Device(
        name=name,
        board=str(board.get("name", p.stem)),
        tier=tier or guess,
        cores=_num(board, "cores", where, 1, integer=True),
        memory_bytes=int(budget_mb * 2**20),
        speed=REFERENCE_SPEED * prior,
        bytes_per_s=4e9 * prior**0.5,
    )


def from_board_files(
    boards: Mapping[str, str | Path],
    links: Mapping[tuple[str, str], Link] | None = None,
    default_link: Link = Link(*DEFAULT_LINK),
    source: str | None = None,
    sink: str | None = None,
    client: bool = True,
) -> Profile:
    """A prior profile: node name -> board file; adds a non-computing "client" when asked."""
    devices = {n: board_device(n, f) for n, f in boards.items()}
    if client and "client" not in devices:
        devices["client"] = Device("client", board="laptop", compute=False)
    first = next(iter(devices))
    return Profile(
        devices, dict(links or {}), default_link, source or first, sink or source or first
    )
