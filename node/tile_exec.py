"""Run one part on spatial tiles: slice the input, run a resized interpreter, crop, stitch.

Regions are the manifest's [y0, y1, x0, x1] half-open windows over NHWC tensors. One
interpreter is re-resized per tile shape (resizing is cheap next to the pathologically
slow case of many cached interpreters in one process, see DESIGN.md).
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
    """One interpreter for a single-input, single-output part, resized per tile shape."""

    def __init__(self, model: bytes | str, settings: RuntimeSettings | None = None,
                 tile_shape: Sequence[int] | None = None) -> None:
        """`tile_shape`: the input shape of the tiles it will run, allocated from the start:
        the runtime's arena never shrinks, so allocating the full shape first would keep
        a full-size arena for a tile-size job."""
        self._interp = make_interpreter(model, settings or RuntimeSettings())
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"a tiled part needs one input and one output, got {len(ins)} and {len(outs)}")
        if tile_shape is not None:
            self._interp.resize_tensor_input(ins[0]["index"], [int(d) for d in tile_shape],
                                             strict=False)
        self._interp.allocate_tensors()
        ins = self._interp.get_input_details()  # their shapes as allocated
        self._in, self._out = ins[0]["index"], outs[0]["index"]
        self.input_dtype = np.dtype(ins[0]["dtype"])
        self.output_dtype = np.dtype(outs[0]["dtype"])
        self._shape: tuple[int, ...] | None = tuple(int(d) for d in ins[0]["shape"])

    def run(self, inputs_region: np.ndarray, crop: Region) -> np.ndarray:
        """Run the part on one tile's input region; return the crop of its output (a copy)."""
        if inputs_region.dtype != self.input_dtype or inputs_region.ndim != 4:
            raise ValueError(f"tile input must be a 4-D {self.input_dtype} array, got "
                             f"{inputs_region.ndim}-D {inputs_region.dtype}")
        shape = tuple(int(d) for d in inputs_region.shape)
        if shape != self._shape:
            # Only on a shape change: allocate_tensors re-plans memory and re-prepares ops.
            # Shape unknown until it succeeds (a too-small tile fails in prepare).
            self._shape = None
            self._interp.resize_tensor_input(self._in, list(shape), strict=False)
            self._interp.allocate_tensors()
            self._shape = shape
        self._interp.set_tensor(self._in, np.ascontiguousarray(inputs_region))
        self._interp.invoke()
        # A view of the runtime's buffer (no full-size copy on the board); only the crop is
        # copied out. The view must not outlive this call (not even in a traceback): the
        # runtime refuses to invoke or resize while its buffers are referenced.
        out = self._interp.tensor(self._out)()
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
        raise ValueError(f"output pixel ({y}, {x}) is covered {cover[y, x]} times; "
                         f"{int((cover == 0).sum())} uncovered, {int((cover > 1).sum())} overlapped")
    return out
