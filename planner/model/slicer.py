"""Slice a model into part files plus manifest.json (the `tilefleet slice` transform).

`slice_model` cuts the chain, computes the tile layouts asked for, and only then writes
anything: a bad request leaves the output directory untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from node.wire.regions import TileSpec
from planner.errors import CutError, TileError
from planner.model.cut import Part, cut_at
from planner.model.graph import ModelGraph
from planner.model.manifest import Manifest, ModelEntry, PartEntry, write_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileRequest:
    """How to tile one part: a rows x cols grid, or explicit split points of the part's
    output rows/columns for uneven tiles (interior points 0 < y1 < ... < height; a
    leading 0 and trailing height may be given too)."""

    rows: int | tuple[int, ...] = 1
    cols: int | tuple[int, ...] = 1

    @classmethod
    def of(cls, value: TileRequest | tuple) -> TileRequest:
        """Accept a TileRequest or a (rows, cols) pair of counts or split-point tuples."""
        if isinstance(value, TileRequest):
            return value
        if isinstance(value, tuple) and len(value) == 2:
            rows, cols = value
            return cls(
                rows if isinstance(rows, int) else tuple(rows),
                cols if isinstance(cols, int) else tuple(cols),
            )
        raise TileError(f"tile request {value!r}: expected (rows, cols)")


def part_file_name(k: int) -> str:
    """File name of part k inside a slice directory."""
    return f"part_{k:03d}.tflite"


def _full_points(points: tuple[int, ...], size: int) -> tuple[int, ...]:
    head = () if points and points[0] == 0 else (0,)
    tail = () if points and points[-1] == size else (size,)
    return (*head, *points, *tail)


def tile_part(graph: ModelGraph, part: Part, spec: TileRequest) -> tuple[TileSpec, ...]:
    """Tile layout of one part (planner/model/tile.py): its tiles' regions, one per crossing
    tensor. Tiles run `tile_ready(part)`, not `part` (tile_ready_part)."""
    from planner.model import tile  # the tiler is optional for untiled slices

    start, end = part.span
    shape = part.outputs[0].shape  # the grid's split points are pixels of the first output
    rows, cols = spec.rows, spec.cols
    if len(shape) == 4:  # explicit interior split points -> the full [0, ..., size] list
        rows = rows if isinstance(rows, int) else _full_points(rows, shape[1])
        cols = cols if isinstance(cols, int) else _full_points(cols, shape[2])
    return tile.tile_layout(graph, start, end, rows, cols).tiles


def tile_ready_part(graph: ModelGraph, part: Part) -> Part:
    """The part file tiles run (planner/model/tilepart.py: upsamples follow the tile's size);
    `part` itself when it has no upsample (most parts: no re-parsing then)."""
    from planner.model.tilepart import tile_ready

    if not any(graph.ops[k].type == "RESIZE_NEAREST_NEIGHBOR" for k in part.ops):
        return part
    return tile_ready(part)


def slice_model(
    graph: ModelGraph,
    points: list[int],
    out_dir: str | Path,
    tiles: dict[int, TileRequest | tuple] | None = None,
    model_file: str | None = None,
) -> Manifest:
    """Cut `graph` at `points`, write part_NNN.tflite files and manifest.json into out_dir."""
    parts = cut_at(graph, points)
    layouts: dict[int, tuple[TileSpec, ...]] = {}
    for k, req in sorted((tiles or {}).items()):
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(parts):
            raise CutError(
                f"{graph.source}: cannot tile part {k}: the slice has parts 0..{len(parts) - 1}"
            )
        try:
            layouts[k] = tile_part(graph, parts[k], TileRequest.of(req))
            parts[k] = tile_ready_part(graph, parts[k])
        except TileError as exc:
            start, end = parts[k].span
            raise TileError(
                f"{graph.source}: cannot tile part {k} (ops [{start}, {end})): {exc}"
            ) from None

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        entries = []
        for k, part in enumerate(parts):
            name = part_file_name(k)
            (out / name).write_bytes(part.data)
            entries.append(PartEntry(name, part.sha256, part.span, part.inputs, part.outputs,
                                     layouts.get(k, ())))
            log.info("wrote %s: ops [%d, %d), %d bytes", name, *part.span, len(part.data))
        model = ModelEntry(
            file=model_file if model_file is not None else str(Path(graph.source).resolve()),
            sha256=graph.sha256,
            inputs=tuple(graph.tensors[t].name for t in graph.inputs),
            outputs=tuple(graph.tensors[t].name for t in graph.outputs),
        )
        manifest = Manifest(model, tuple(entries))
        write_manifest(manifest, out)
    except OSError as exc:
        raise CutError(f"{out}: cannot write slice ({exc.strerror or exc})") from None
    return manifest
