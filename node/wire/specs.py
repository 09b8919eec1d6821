"""Deployment specs carried by the `deploy` command: stages, inputs, routes, tiles.

The tile-region type, TileSpec, lives in node/wire/regions.py (no socket imports, so
the planner's pure layers share it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from node.errors import WireError
from node.wire.codes import Code
from node.wire.frames import CLIENT, DTYPES, is_endpoint
from node.wire.regions import Region, TileSpec

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# the most elements one stage input may declare (a 2^30-element float32 tensor is 4 GiB,
# more than any board holds): beyond it a deploy is refused before anything is allocated
MAX_ELEMENTS = 1 << 30


def check(cond: bool, msg: str) -> None:
    """Raise WireError(bad_command) with msg unless cond."""
    if not cond:
        raise WireError(msg, code=Code.BAD_COMMAND)


def _region_ok(r: Region | None, what: str) -> None:
    if r is not None:
        check(r[0] < r[1] and r[2] < r[3] and min(r) >= 0, f"{what}: empty region {list(r)}")


@dataclass(frozen=True)
class InputSpec:
    """A named stage input: full shape and dtype, and how many region pieces make it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    pieces: int = 1

    def __post_init__(self) -> None:
        check(self.dtype in DTYPES, f"input {self.name!r}: unsupported dtype {self.dtype!r}")
        check(self.pieces >= 1, f"input {self.name!r}: pieces must be >= 1")
        check(all(d >= 0 for d in self.shape), f"input {self.name!r}: negative dimension")
        check(len(self.shape) <= 8 and math.prod(self.shape) <= MAX_ELEMENTS,
              f"input {self.name!r}: shape {list(self.shape)[:9]} has more than 8 dimensions "
              f"or {MAX_ELEMENTS} elements")


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
        check(self.to == CLIENT or is_endpoint(self.to),  # printable: zmq connects to it
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
    threads: int = 0  # 0: the node's default (tile stages default to 1, see docs/runtimes.md)

    def __post_init__(self) -> None:
        check(bool(self.id), "stage id must not be empty")
        check(self.part is None or bool(SHA256_RE.match(self.part)),
               f"stage {self.id!r}: part must be a lowercase sha256 hex digest")
        check(bool(self.inputs), f"stage {self.id!r}: no inputs")
        names = [i.name for i in self.inputs]
        check(len(set(names)) == len(names), f"stage {self.id!r}: duplicate input names")
        check(self.threads >= 0, f"stage {self.id!r}: threads must be >= 0")
        check(self.tile is None or self.part is not None,
               f"stage {self.id!r}: a tile stage needs a part")
