"""`tilefleet slice MODEL --at I [--at J ...] [--tiles RxC@K ...] -o DIR [--json]`.

Uneven tiles (heterogeneous devices): `--split-rows 8,24@K` / `--split-cols 16@K` give the
interior split points of part K's output rows / columns; they replace the row / column
count of a `--tiles` for the same part.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from planner.commands._common import human_bytes, print_json, print_table
from planner.model.graph import ModelGraph
from planner.model.slicer import TileRequest, slice_model

_GRID = re.compile(r"^(\d+)x(\d+)@(\d+)$")
_SPLIT = re.compile(r"^(\d+(?:,\d+)*)@(\d+)$")


def _cut_points(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--at {text!r}: expected an op index (e.g. --at 12)"
        ) from None


def _grid(text: str) -> tuple[int, int, int]:
    m = _GRID.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"--tiles {text!r}: expected RxC@K (e.g. 2x3@0)")
    rows, cols, part = (int(g) for g in m.groups())
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"--tiles {text!r}: rows and columns must be at least 1")
    return part, rows, cols


def _split(text: str) -> tuple[int, tuple[int, ...]]:
    m = _SPLIT.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"split {text!r}: expected P1,P2,...@K (e.g. 8,24@0)")
    return int(m.group(2)), tuple(int(v) for v in m.group(1).split(","))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("slice", help="cut a model into part files and manifest.json")
    p.add_argument("model", help=".tflite file")
    p.add_argument("--at", action="append", type=_cut_points, default=[], metavar="I",
                   help="cut before op I (repeat, or I,J,...); part k holds the ops between cuts")
    p.add_argument("--tiles", action="append", type=_grid, default=[], metavar="RxC@K",
                   help="also compute an R-row by C-column tile layout for part K")
    p.add_argument("--split-rows", action="append", type=_split, default=[], metavar="Y1,Y2@K",
                   help="uneven tiles: interior row split points of part K's output")
    p.add_argument("--split-cols", action="append", type=_split, default=[], metavar="X1,X2@K",
                   help="uneven tiles: interior column split points of part K's output")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--json", action="store_true", help="print manifest.json on stdout")
    p.set_defaults(func=run)


def tile_requests(args: argparse.Namespace) -> dict[int, TileRequest]:
    """Merge --tiles, --split-rows and --split-cols into one TileRequest per part."""
    rows: dict[int, int | tuple[int, ...]] = {}
    cols: dict[int, int | tuple[int, ...]] = {}
    for part, r, c in args.tiles:
        rows.setdefault(part, r)
        cols.setdefault(part, c)
    for part, pts in args.split_rows:
        rows[part] = pts
        cols.setdefault(part, 1)
    for part, pts in args.split_cols:
        cols[part] = pts
        rows.setdefault(part, 1)
    return {k: TileRequest(rows[k], cols[k]) for k in rows}


def run(args: argparse.Namespace) -> int:
    graph = ModelGraph.load(args.model)
    points = [p for group in args.at for p in group]
    manifest = slice_model(graph, points, args.out, tile_requests(args))
    if args.json:
        print_json(manifest.to_json())
        return 0
    print(f"{len(manifest.parts)} parts of {graph.source} written to {args.out}")
    rows = []
    for part in manifest.parts:
        size = (Path(args.out) / part.file).stat().st_size
        rows.append([part.file, f"[{part.ops[0]}, {part.ops[1]})", human_bytes(size),
                     _names(part.inputs), _names(part.outputs),
                     len(part.tiles) or "-"])
    print_table(["file", "ops", "size", "inputs", "outputs", "tiles"], rows)
    return 0


def _names(tensors) -> str:
    """Tensor names for the table; converter names can be hundreds of characters long."""
    short = [t.name if len(t.name) <= 32 else t.name[:14] + "..." + t.name[-15:] for t in tensors]
    return ", ".join(short[:3]) + (f" (+{len(short) - 3})" if len(short) > 3 else "")
