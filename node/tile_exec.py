"""Run one part on spatial tiles: slice each input, run a resized interpreter, crop, stitch.

Regions are the manifest's [y0, y1, x0, x1] half-open windows over NHWC tensors, one per
crossing tensor (node/wire/regions.py TileSpec). One
interpreter is re-resized per tile shape (resizing is cheap next to the pathologically
slow case of many cached interpreters in one process, see docs/runtimes.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from node.runtime import RuntimeSettings, make_interpreter

Region = Sequence[int]


def _check_region(region: Region, height: int, width: int, what: str) -> tuple[int, int, int, int]:
    if len(region) != 4:
        raise ValueError(f"{what} {list(region)} must be [y0, y1, x0, x1]")
    y0, y1, x0, x1 = (int(v) for v in region)
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(f"{what} {[y0, y1, x0, x1]} is empty or outside {height}x{width}")
    return y0, y1, x0, x1


def slice_region(x: np.ndarray, region: Region) -> np.ndarray:
    """The [y0, y1, x0, x1] window of an NHWC array, as a contiguous copy."""
    if x.ndim != 4:
        raise ValueError(f"expected an NHWC array, got shape {x.shape}")
    y0, y1, x0, x1 = _check_region(region, x.shape[1], x.shape[2], "region")
    return np.ascontiguousarray(x[:, y0:y1, x0:x1, :])


class TileRunner:
    """One interpreter for a part run tile by tile, resized per tile shape.

    A part may have several activation inputs and outputs (a cut inside a residual block,
    a route layer): each input gets its own window and each output its own crop, in the
    part's input and output order (`input_names`, `output_names`).
    """

    def __init__(self, model: bytes | str, settings: RuntimeSettings | None = None,
                 tile_shape: Sequence[int] | Sequence[Sequence[int]] | None = None) -> None:
        """`tile_shape`: the input shape (or one per input) of the tiles it will run,
        allocated from the start: the runtime's arena never shrinks, so allocating the full
        shape first would keep a full-size arena for a tile-size job."""
        self._interp = make_interpreter(model, settings or RuntimeSettings())
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if not ins or not outs:
            raise ValueError(
                f"a tiled part needs inputs and outputs, got {len(ins)} and {len(outs)}"
            )
        if tile_shape is not None:
            shapes = [tile_shape] if isinstance(tile_shape[0], int) else list(tile_shape)
            if len(shapes) != len(ins):
                raise ValueError(f"{len(shapes)} tile shapes for a part of {len(ins)} inputs")
            for d, shape in zip(ins, shapes, strict=True):
                self._interp.resize_tensor_input(d["index"], [int(v) for v in shape], strict=False)
        self._interp.allocate_tensors()
        ins = self._interp.get_input_details()  # their shapes as allocated
        self._in = [d["index"] for d in ins]
        self._out = [d["index"] for d in outs]
        self.input_names = tuple(d["name"] for d in ins)
        self.output_names = tuple(d["name"] for d in outs)
        self.input_dtypes = tuple(np.dtype(d["dtype"]) for d in ins)
        self.output_dtypes = tuple(np.dtype(d["dtype"]) for d in outs)
        self.input_dtype, self.output_dtype = self.input_dtypes[0], self.output_dtypes[0]
        self._shapes: tuple[tuple[int, ...], ...] | None = tuple(
            tuple(int(v) for v in d["shape"]) for d in ins)

    def run(self, inputs_region: np.ndarray, crop: Region) -> np.ndarray:
        """Run a one-input, one-output part on one tile's input region; return the crop of
        its output (a copy)."""
        if len(self._in) != 1 or len(self._out) != 1:
            raise ValueError(f"run() is for a part of one input and one output; this one has "
                             f"{len(self._in)} and {len(self._out)} (use run_all)")
        return self.run_all([inputs_region], [crop])[0]

    def run_all(self, regions: Sequence[np.ndarray], crops: Sequence[Region]) -> list[np.ndarray]:
        """Run the part on one tile's input windows (one per input, part order); return each
        output's crop (copies, part order)."""
        if len(regions) != len(self._in) or len(crops) != len(self._out):
            raise ValueError(f"expected {len(self._in)} input windows and {len(self._out)} crops, "
                             f"got {len(regions)} and {len(crops)}")
        for x, dtype in zip(regions, self.input_dtypes, strict=True):
            if x.dtype != dtype or x.ndim != 4:
                raise ValueError(
                    f"tile input must be a 4-D {dtype} array, got {x.ndim}-D {x.dtype}"
                )
        shapes = tuple(tuple(int(d) for d in x.shape) for x in regions)
        if shapes != self._shapes:
            # Only on a shape change: allocate_tensors re-plans memory and re-prepares ops.
            # Shape unknown until it succeeds (a too-small tile fails in prepare).
            self._shapes = None
            for idx, shape in zip(self._in, shapes, strict=True):
                self._interp.resize_tensor_input(idx, list(shape), strict=False)
            self._interp.allocate_tensors()
            self._shapes = shapes
        for idx, x in zip(self._in, regions, strict=True):
            self._interp.set_tensor(idx, np.ascontiguousarray(x))
        self._interp.invoke()
        return [self._crop(idx, crop) for idx, crop in zip(self._out, crops, strict=True)]

    def _crop(self, idx: int, crop: Region) -> np.ndarray:
        # A view of the runtime's buffer (no full-size copy on the board); only the crop is
        # copied out. The view must not outlive this call (not even in a traceback): the
        # runtime refuses to invoke or resize while its buffers are referenced.
        out = self._interp.tensor(idx)()
        try:
            y0, y1, x0, x1 = _check_region(crop, out.shape[1], out.shape[2], "crop")
            return out[:, y0:y1, x0:x1, :].copy()
        finally:
            del out


def stitch(full_shape: Sequence[int], dtype: np.dtype | str,
           pieces: list[tuple[Region, np.ndarray]]) -> np.ndarray:
    """Assemble cropped tile outputs into the full NHWC tensor; every pixel exactly once."""
    shape = tuple(int(d) for d in full_shape)
    if len(shape) != 4:
        raise ValueError(f"expected an NHWC shape, got {list(shape)}")
    out = np.empty(shape, dtype=dtype)
    cover = np.zeros(shape[1:3], dtype=np.int32)
    for region, piece in pieces:
        y0, y1, x0, x1 = _check_region(region, shape[1], shape[2], "output region")
        want = (shape[0], y1 - y0, x1 - x0, shape[3])
        if piece.shape != want or piece.dtype != out.dtype:
            raise ValueError(f"piece for {[y0, y1, x0, x1]} is {piece.dtype}{list(piece.shape)}, "
                             f"expected {out.dtype}{list(want)}")
        out[:, y0:y1, x0:x1, :] = piece
        cover[y0:y1, x0:x1] += 1
    if (cover != 1).any():
        y, x = np.argwhere(cover != 1)[0]
        raise ValueError(
            f"output pixel ({y}, {x}) is covered {cover[y, x]} times; "
            f"{int((cover == 0).sum())} uncovered, {int((cover > 1).sum())} overlapped"
        )
    return out
