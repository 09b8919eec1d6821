"""Run a slice (its chain of parts, tiles included) and compare with the whole model.

The chain is followed by tensor name: each part's inputs are looked up among the model
inputs and the outputs of earlier parts, as manifest.json records them. Both sides run
under the same `RuntimeSettings`, since int8 bits differ between kernel configurations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from node import tile_exec
from node.runtime import RuntimeSettings, make_interpreter, run_whole
from planner.errors import ModelError
from planner.model.cut import Part
from planner.model.graph import ModelGraph
from planner.model.manifest import (
    Manifest,
    ManifestError,
    PartEntry,
    TensorSpec,
    check_chain,
    load_manifest,
)

_DEFAULT_SETTINGS = RuntimeSettings()  # one XNNPACK thread, as the nodes run


@dataclass(frozen=True)
class OutputDiff:
    """How far one model output of the chain is from the whole model's."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs_diff: float
    identical: bool

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "max_abs_diff": self.max_abs_diff, "identical": self.identical}


@dataclass(frozen=True)
class VerifyReport:
    """Result of `verify_slice`: per-output differences and the settings used."""

    slice_dir: str
    model_file: str
    runtime: str
    parts: int
    tiles: int
    seed: int
    outputs: tuple[OutputDiff, ...]

    @property
    def identical(self) -> bool:
        return all(o.identical for o in self.outputs)

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=0.0)

    def to_json(self) -> dict:
        return {"slice": self.slice_dir, "model": self.model_file, "runtime": self.runtime,
                "parts": self.parts, "tiles": self.tiles, "seed": self.seed,
                "identical": self.identical, "max_abs_diff": self.max_abs_diff,
                "outputs": [o.to_json() for o in self.outputs]}


def random_input(shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> np.ndarray:
    """A deterministic random array: normal floats, full-range small integers, bools."""
    if dtype in ("float32", "float16", "float64"):
        return rng.standard_normal(shape).astype(dtype)
    if dtype in ("int8", "uint8", "int16", "uint16"):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    if dtype in ("int32", "int64", "uint32", "uint64"):
        return rng.integers(0, 8, size=shape).astype(dtype)  # often indices: keep them small
    if dtype == "bool":
        return rng.random(shape) < 0.5
    raise ModelError(f"cannot make a random input of dtype {dtype}")


def model_inputs(graph: ModelGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for every model input, by unique name, in model-input order."""
    rng = np.random.default_rng(seed)
    return {graph.tensors[t].name: random_input(graph.tensors[t].shape, graph.tensors[t].dtype, rng)
            for t in graph.inputs}


def read_part(slice_dir: Path, entry: PartEntry) -> bytes:
    """Bytes of a part file, checked against the manifest's sha256."""
    path = slice_dir / entry.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read part file ({exc.strerror})") from None
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ManifestError(
            f"{path}: sha256 does not match manifest.json (file changed or damaged)"
        )
    return data


def run_part(data: bytes, entry: PartEntry, feeds: dict[str, np.ndarray],
             settings: RuntimeSettings) -> dict[str, np.ndarray]:
    """Run one untiled part on the named input arrays; return its outputs by name."""
    try:
        interp = make_interpreter(data, settings)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ManifestError(f"{entry.file}: the runtime cannot load this part ({exc})") from None
    details = interp.get_input_details()
    names = [d["name"] for d in details]
    # Match by name (the cutter writes unique names); fall back to position otherwise.
    order = (
        names if set(names) == {s.name for s in entry.inputs} else [s.name for s in entry.inputs]
    )
    for det, name in zip(details, order, strict=True):
        interp.set_tensor(det["index"], feeds[name])
    interp.invoke()
    out_details = interp.get_output_details()
    out_names = [d["name"] for d in out_details]
    if set(out_names) != {s.name for s in entry.outputs}:
        out_names = [s.name for s in entry.outputs]
    return {
        n: interp.get_tensor(d["index"]).copy() for n, d in zip(out_names, out_details, strict=True)
    }


def run_tiled_part(data: bytes, entry: PartEntry, feeds: dict[str, np.ndarray],
                   settings: RuntimeSettings) -> dict[str, np.ndarray]:
    """Run a tiled part tile by tile (slice each input, run, crop each output, stitch) with
    node/tile_exec.py; the part's inputs and outputs in manifest order."""
    try:
        runner = tile_exec.TileRunner(data, settings)
        pieces: list[list] = [[] for _ in entry.outputs]
        for t in entry.tiles:
            windows = [tile_exec.slice_region(feeds[spec.name], t.input_window(k))
                       for k, spec in enumerate(entry.inputs)]
            crops = [t.crops[k] if t.multi else t.crop for k in range(len(entry.outputs))]
            for k, out in enumerate(runner.run_all(windows, crops)):
                pieces[k].append((t.output_window(k), out))
        return {out.name: tile_exec.stitch(out.shape, out.dtype, ps)
                for out, ps in zip(entry.outputs, pieces, strict=True)}
    except ValueError as exc:  # regions that do not fit the tensors: a bad manifest
        raise ManifestError(f"{entry.file}: tiles do not fit the part ({exc})") from None


def _check(entry: PartEntry, spec: TensorSpec, arr: np.ndarray) -> None:
    if tuple(arr.shape) != tuple(spec.shape) or str(arr.dtype) != spec.dtype:
        raise ManifestError(f"{entry.file}: tensor {spec.name!r} is {arr.dtype}{list(arr.shape)}, "
                            f"manifest.json says {spec.dtype}{list(spec.shape)}")


def run_chain(manifest: Manifest, slice_dir: Path, inputs: dict[str, np.ndarray],
              settings: RuntimeSettings = _DEFAULT_SETTINGS,
              datas: list[bytes] | None = None) -> dict[str, np.ndarray]:
    """Run every part in order, following tensors by name; return all tensors seen."""
    check_chain(manifest, inputs, str(slice_dir / "manifest.json"))
    if datas is None:
        datas = [read_part(slice_dir, entry) for entry in manifest.parts]
    env = dict(inputs)
    for entry, data in zip(manifest.parts, datas, strict=True):
        for spec in entry.inputs:
            _check(entry, spec, env[spec.name])
        feeds = {s.name: env[s.name] for s in entry.inputs}
        run = run_tiled_part if entry.tiles else run_part
        outs = run(data, entry, feeds, settings)
        for spec in entry.outputs:
            _check(entry, spec, outs[spec.name])
        env.update(outs)
    return env


def run_parts(parts: list[Part], inputs: dict[str, np.ndarray],
              settings: RuntimeSettings = _DEFAULT_SETTINGS) -> dict[str, np.ndarray]:
    """Run in-memory parts (from planner.model.cut) in order, following tensors by name."""
    env = dict(inputs)
    for k, part in enumerate(parts):
        entry = PartEntry(f"part {k}", part.sha256, part.span, part.inputs, part.outputs)
        missing = [s.name for s in part.inputs if s.name not in env]
        if missing:
            raise ManifestError(f"part {k}: inputs {missing} are not produced before it")
        env.update(run_part(part.data, entry, {s.name: env[s.name] for s in part.inputs}, settings))
    return env


def _diff(name: str, got: np.ndarray, want: np.ndarray) -> OutputDiff:
    same = got.shape == want.shape and got.dtype == want.dtype and got.tobytes() == want.tobytes()
    if got.shape != want.shape:
        diff = float("inf")
    elif got.size == 0:
        diff = 0.0
    else:
        diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    return OutputDiff(name, tuple(want.shape), str(want.dtype), diff, same)


def find_model(manifest: Manifest, slice_dir: Path, override: str | Path | None) -> Path:
    """The whole-model file: --model, else the manifest's path, else its name in the slice dir."""
    candidates = (
        [Path(override)]
        if override
        else [
            Path(manifest.model.file),
            slice_dir / manifest.model.file,
            slice_dir / Path(manifest.model.file).name,
        ]
    )
    for c in candidates:
        if c.is_file():
            return c
    raise ModelError(f"{candidates[0]}: model file not found (use --model to point at it)")


def verify_slice(slice_dir: str | Path, model: str | Path | None = None,
                 settings: RuntimeSettings = _DEFAULT_SETTINGS, seed: int = 0) -> VerifyReport:
    """Run the slice in `slice_dir` and the whole model on the same random inputs; compare."""
    d = Path(slice_dir)
    manifest = load_manifest(d)
    path = find_model(manifest, d, model)
    graph = ModelGraph.load(path)
    if graph.sha256 != manifest.model.sha256:
        raise ModelError(
            f"{path}: not the model this slice was cut from (sha256 differs from manifest.json)"
        )
    inputs = model_inputs(graph, seed)
    # Check everything that can be checked before running anything, so bad input gives
    # one error line rather than runtime log lines followed by an error.
    check_chain(manifest, inputs, str(d / "manifest.json"))
    datas = [read_part(d, entry) for entry in manifest.parts]
    whole = run_whole(graph.data, list(inputs.values()), settings)
    env = run_chain(manifest, d, inputs, settings, datas)
    diffs = []
    for t, want in zip(graph.outputs, whole, strict=True):
        name = graph.tensors[t].name
        if name not in env:
            raise ManifestError(f"{d / 'manifest.json'}: no part produces model output {name!r}")
        diffs.append(_diff(name, env[name], want))
    return VerifyReport(str(d), str(path), settings.label(), len(manifest.parts),
                        sum(len(p.tiles) for p in manifest.parts), seed, tuple(diffs))
