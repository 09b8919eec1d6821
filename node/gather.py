"""Gather region pieces of named tensors per request and stitch them (pure, no I/O).

A stage's window is the part of each full tensor it needs: the whole tensor for a
layer-range stage, the tile's input region of that tensor for a tile stage (each input of
a part with several has its own). Pieces carry their region
in full-tensor coordinates (NHWC rows and columns); a request is complete when every
input got its announced number of distinct pieces and they cover the window. The
planner's client uses the same class to stitch results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from node.errors import WireError
from node.wire.codes import Code
from node.wire.frames import Region, TensorMeta


@dataclass(frozen=True)
class Want:
    """What a stage expects of one input tensor."""

    dtype: str
    full_shape: tuple[int, ...]
    pieces: int = 1


def full_region(shape: tuple[int, ...]) -> Region | None:
    """The region covering a whole tensor (None for tensors that are not 4-d)."""
    return (0, shape[1], 0, shape[2]) if len(shape) == 4 else None


def contains(outer: Region | None, inner: Region | None) -> bool:
    if outer is None or inner is None:
        return outer == inner or outer is None
    return outer[0] <= inner[0] and inner[1] <= outer[1] and outer[2] <= inner[2] \
        and inner[3] <= outer[3]


def cut(arr: np.ndarray, have: Region | None, want: Region | None) -> np.ndarray:
    """The `want` window of an array covering `have` (both full-tensor coordinates)."""
    if want is None or want == have:
        return arr
    y0, x0 = (have[0], have[2]) if have else (0, 0)
    return arr[:, want[0] - y0:want[1] - y0, want[2] - x0:want[3] - x0, :]


def _area(r: Region) -> int:
    return (r[1] - r[0]) * (r[3] - r[2])


@dataclass
class _Pending:
    started: float
    pieces: dict[str, dict[Region | None, np.ndarray]] = field(default_factory=dict)


class Gather:
    """Collects pieces per request key; `add` returns the full inputs once complete."""

    def __init__(self, wants: dict[str, Want],
                 window: Region | Mapping[str, Region] | None = None,
                 max_pending: int = 64) -> None:
        """`window`: the region of every input this stage needs, or one region per input
        name (a tile of a part with several inputs), or None for whole tensors."""
        self.wants = wants
        self.window = window
        self.max_pending = max_pending
        self._pending: dict[str, _Pending] = {}
        self._windows = {n: self.window_of(n) for n in wants}  # read on every message
        self._whole = all(w.pieces == 1 for w in wants.values())

    def window_of(self, name: str) -> Region | None:
        """The region of input `name` this stage needs (None: a whole non-4-d tensor)."""
        if isinstance(self.window, Mapping):
            return self.window.get(name) or full_region(self.wants[name].full_shape)
        return self.window if self.window is not None else full_region(
            self.wants[name].full_shape)

    def check(self, meta: TensorMeta) -> None:
        """Raise WireError if a piece does not fit this stage's inputs."""
        want = self.wants.get(meta.name)
        if want is None:
            raise WireError(f"unexpected tensor {meta.name!r} (stage inputs: "
                            f"{sorted(self.wants)})", code=Code.WRONG_TENSOR)
        if meta.dtype != want.dtype or meta.full_shape != want.full_shape:
            raise WireError(f"tensor {meta.name!r}: got {meta.dtype}{list(meta.full_shape)}, "
                            f"stage wants {want.dtype}{list(want.full_shape)}",
                            code=Code.WRONG_TENSOR)
        win = self._windows[meta.name]
        have = meta.region or full_region(meta.full_shape)
        if not (contains(win, have) or (want.pieces == 1 and contains(have, win))):
            raise WireError(f"tensor {meta.name!r}: region {have} does not fit the stage "
                            f"window {win}", code=Code.WRONG_TENSOR)

    def add(self, key: str, metas: tuple[TensorMeta, ...], arrays: list[np.ndarray],
            now: float | None = None, checked: bool = False
            ) -> tuple[dict[str, np.ndarray] | None, list[str]]:
        """Add pieces; returns (inputs if complete else None, keys evicted for room).

        `checked`: the caller already ran `check` on these metas (a stage does on receipt).
        """
        if not checked:
            for m in metas:
                self.check(m)
        if self._whole and len(metas) == len(self.wants) and key not in self._pending:
            win = self._windows
            out = {m.name: cut(a, m.region or full_region(m.full_shape), win[m.name])
                   for m, a in zip(metas, arrays, strict=True)}
            if len(out) == len(metas):
                # fast path: one message carries every input whole -> no copy, no state
                return out, []
        now = time.monotonic() if now is None else now
        evicted = []
        p = self._pending.get(key)
        if p is None:
            while len(self._pending) >= self.max_pending:
                oldest = min(self._pending, key=lambda k: self._pending[k].started)
                del self._pending[oldest]
                evicted.append(oldest)
            p = self._pending[key] = _Pending(now)
        for m, a in zip(metas, arrays, strict=True):
            p.pieces.setdefault(m.name, {})[m.region] = a  # a repeated piece replaces
        if any(len(p.pieces.get(n, ())) < w.pieces for n, w in self.wants.items()):
            return None, evicted
        del self._pending[key]
        return {n: self._stitch(n, p.pieces[n]) for n in self.wants}, evicted

    def _stitch(self, name: str, pieces: dict[Region | None, np.ndarray]) -> np.ndarray:
        want = self.wants[name]
        win = self.window_of(name)
        if len(pieces) == 1:
            (region, arr), = pieces.items()
            return cut(arr, region or full_region(want.full_shape), win)
        assert win is not None  # several pieces imply a 4-d tensor with regions
        shape = (want.full_shape[0], win[1] - win[0], win[3] - win[2], want.full_shape[3])
        out = np.empty(shape, dtype=want.dtype)
        covered = 0
        for region, arr in pieces.items():
            if region is None:
                raise WireError(f"tensor {name!r}: a whole-tensor piece among "
                                f"{want.pieces} pieces", code=Code.WRONG_TENSOR)
            out[:, region[0] - win[0]:region[1] - win[0],
                region[2] - win[2]:region[3] - win[2], :] = arr
            covered += _area(region)
        if covered != _area(win):
            raise WireError(f"tensor {name!r}: pieces cover {covered} of {_area(win)} "
                            "pixels of the window", code=Code.INCOMPLETE)
        return out

    def expire(self, older_than_s: float, now: float | None = None) -> list[str]:
        """Drop requests waiting longer than older_than_s; return their keys."""
        now = time.monotonic() if now is None else now
        old = [k for k, p in self._pending.items() if now - p.started > older_than_s]
        for k in old:
            del self._pending[k]
        return old

    @property
    def pending(self) -> int:
        return len(self._pending)


def nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize
