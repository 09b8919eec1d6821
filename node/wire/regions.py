"""Regions of NHWC tensors and the tile-region type (TileSpec), without the network.

A region is [y0, y1, x0, x1), half-open rows and columns of dims 1 and 2 of an NHWC
tensor, in full-tensor coordinates. `TileSpec` is the one tile-region type of the
project: the slice manifest's `tiles` records, the plan file's tile regions and the
deploy command's tile stages all hold it. This module imports no socket library, so the
planner's pure layers (the model toolkit, the planning core) use it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.errors import WireError
from node.wire.codes import Code

Region = tuple[int, int, int, int]  # [y0, y1, x0, x1), rows and cols of NHWC dims 1, 2


def region_shape(full_shape: Sequence[int], region: Region | None) -> tuple[int, ...]:
    """Shape of the `region` window of a tensor of `full_shape` (None: the whole tensor)."""
    full = tuple(int(d) for d in full_shape)
    if region is None:
        return full
    return (full[0], region[1] - region[0], region[3] - region[2], *full[3:])


def _region_ok(r: Region | None, what: str) -> None:
    if r is not None and not (len(r) == 4 and r[0] < r[1] and r[2] < r[3] and min(r) >= 0):
        raise WireError(f"{what}: empty region {list(r)}", code=Code.BAD_COMMAND)


@dataclass(frozen=True)
class TileSpec:
    """One spatial tile of a part (full-tensor coordinates).

    `input_regions[k]` is the window of the part's k-th activation input the tile reads;
    `output_regions[k]` the window of its k-th output it produces, and `crops[k]` where
    that window lies in the tile's own k-th output (the part's input and output order, as
    the part file and the manifest list them). Every tensor has its own regions, all from
    one grid over the outputs. `input_region`, `output_region` and `crop` are the first
    (for a one-input, one-output part: the only) tensor's; the lists may be left empty for
    such a part and are then filled from them.
    """

    input_region: Region
    output_region: Region
    crop: Region
    input_regions: tuple[Region, ...] = ()
    output_regions: tuple[Region, ...] = ()
    crops: tuple[Region, ...] = ()

    def __post_init__(self) -> None:
        for single, many in (("input_region", "input_regions"),
                             ("output_region", "output_regions"), ("crop", "crops")):
            first = tuple(getattr(self, single))
            regions = tuple(tuple(r) for r in getattr(self, many)) or (first,)
            if regions[0] != first:
                raise WireError(f"tile {many}[0] {list(regions[0])} differs from {single} "
                                f"{list(first)}", code=Code.BAD_COMMAND)
            for k, r in enumerate(regions):
                _region_ok(r, f"tile {many}[{k}]")
            object.__setattr__(self, single, first)
            object.__setattr__(self, many, regions)
        if len(self.output_regions) != len(self.crops):
            raise WireError(f"tile: {len(self.output_regions)} output regions but "
                            f"{len(self.crops)} crops", code=Code.BAD_COMMAND)
        for k, (o, c) in enumerate(zip(self.output_regions, self.crops, strict=True)):
            if (o[1] - o[0], o[3] - o[2]) != (c[1] - c[0], c[3] - c[2]):
                raise WireError(f"tile output {k}: region {list(o)} and crop {list(c)} differ "
                                "in size", code=Code.BAD_COMMAND)

    def input_window(self, k: int) -> Region:
        """The window of the part's k-th input (the one region when only one is given)."""
        return self.input_regions[k] if len(self.input_regions) > 1 else self.input_region

    def output_window(self, k: int) -> Region:
        """The window of the part's k-th output the tile produces (likewise)."""
        return self.output_regions[k] if len(self.output_regions) > 1 else self.output_region

    @property
    def multi(self) -> bool:
        """True when the part has several activation inputs or outputs."""
        return len(self.input_regions) > 1 or len(self.output_regions) > 1

    def to_json(self) -> dict[str, Any]:
        """The manifest / plan record; the per-tensor lists only when there are several."""
        rec: dict[str, Any] = {"input_region": list(self.input_region),
                               "output_region": list(self.output_region),
                               "crop": list(self.crop)}
        if self.multi:
            for key in ("input_regions", "output_regions", "crops"):
                rec[key] = [list(r) for r in getattr(self, key)]
        return rec

    @classmethod
    def from_json(cls, record: Any, where: str = "tile record") -> TileSpec:
        """Inverse of to_json; ValueError names the missing or malformed key."""
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object, got {type(record).__name__}")

        def region(value: Any, key: str) -> Region:
            if not isinstance(value, list) or len(value) != 4 or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError(f"{where}: {key!r} must be a list of 4 ints, got {value!r}")
            return tuple(value)  # type: ignore[return-value]

        singles = [region(record.get(k), k) for k in ("input_region", "output_region", "crop")]
        lists = []
        for key in ("input_regions", "output_regions", "crops"):
            value = record.get(key, [])
            if not isinstance(value, list):
                raise ValueError(f"{where}: {key!r} must be a list of regions, got {value!r}")
            lists.append(tuple(region(v, f"{key}[{i}]") for i, v in enumerate(value)))
        try:
            return cls(*singles, *lists)
        except WireError as exc:
            raise ValueError(f"{where}: {exc}") from None
