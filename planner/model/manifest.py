"""manifest.json of a sliced model (docs/cli.md, version 1): typed records, write, load.

The manifest is the hand-off between `tilefleet slice` and whoever runs the parts
(verify, deploy, the node store). Loading validates every key and names the file and
the key on error; unknown extra keys are allowed (the format may grow).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.wire.regions import TileSpec
from planner.errors import TilefleetError

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ManifestError(TilefleetError):
    """A manifest that is missing, not JSON, or has a missing or malformed key."""


@dataclass(frozen=True)
class TensorSpec:
    """A tensor crossing a part boundary: unique name, shape, dtype, per-tensor quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class PartEntry:
    """One part file: its op range [start, end), boundary tensors in a defined order, tiles
    (regions per crossing tensor in that order: node/wire/regions.py TileSpec)."""

    file: str
    sha256: str
    ops: tuple[int, int]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tiles: tuple[TileSpec, ...] = ()

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "ops": list(self.ops),
                "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs],
                "tiles": [t.to_json() for t in self.tiles]}


@dataclass(frozen=True)
class ModelEntry:
    """The whole model the parts were cut from."""

    file: str
    sha256: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "inputs": list(self.inputs),
                "outputs": list(self.outputs)}


@dataclass(frozen=True)
class Manifest:
    """manifest.json: the model and its parts in chain order."""

    model: ModelEntry
    parts: tuple[PartEntry, ...]
    version: int = MANIFEST_VERSION

    def to_json(self) -> dict:
        return {"version": self.version, "model": self.model.to_json(),
                "parts": [p.to_json() for p in self.parts]}


def write_manifest(manifest: Manifest, out_dir: str | Path) -> Path:
    """Write DIR/manifest.json and return its path."""
    path = Path(out_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return path


# ---- loading -------------------------------------------------------------------------
class _Reader:
    """Typed access to a JSON document; errors name the file and the key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, what: str) -> ManifestError:
        return ManifestError(f"{self.source}: {key}: {what}")

    def get(self, obj: Any, key: str, path: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(obj, dict):
            raise self.fail(path, "expected an object")
        if key not in obj:
            raise self.fail(f"{path}.{key}" if path else key, "missing")
        value = obj[key]
        # bool is an int in Python; never accept it where a number is meant.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise self.fail(
                f"{path}.{key}" if path else key,
                f"expected {_kind_name(kind)}, got {type(value).__name__}",
            )
        return value

    def ints(self, value: Any, path: str, length: int | None = None) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise self.fail(path, "expected a list of integers")
        if length is not None and len(value) != length:
            raise self.fail(path, f"expected {length} integers, got {len(value)}")
        return tuple(value)

    def tensor(self, obj: Any, path: str) -> TensorSpec:
        scale = self.get(obj, "scale", path, (int, float, type(None)))
        zp = self.get(obj, "zero_point", path, (int, type(None)))
        return TensorSpec(
            name=self.get(obj, "name", path, str),
            shape=self.ints(self.get(obj, "shape", path, list), f"{path}.shape"),
            dtype=self.get(obj, "dtype", path, str),
            scale=None if scale is None else float(scale),
            zero_point=zp,
        )

    def tile(self, obj: Any, path: str, n_in: int, n_out: int) -> TileSpec:
        for k in ("input_region", "output_region", "crop"):
            self.ints(self.get(obj, k, path, list), f"{path}.{k}", 4)
        try:
            tile = TileSpec.from_json(obj, path)
        except ValueError as exc:
            raise ManifestError(f"{self.source}: {exc}") from None
        if tile.multi and (len(tile.input_regions), len(tile.crops)) != (n_in, n_out):
            raise self.fail(path, f"{len(tile.input_regions)} input regions and {len(tile.crops)} "
                            f"crops for a part of {n_in} inputs and {n_out} outputs")
        return tile

    def part(self, obj: Any, path: str) -> PartEntry:
        ins = self.get(obj, "inputs", path, list)
        outs = self.get(obj, "outputs", path, list)
        tiles = obj.get("tiles", []) if isinstance(obj, dict) else []
        if not isinstance(tiles, list):
            raise self.fail(f"{path}.tiles", "expected a list")
        ops = self.ints(self.get(obj, "ops", path, list), f"{path}.ops", 2)
        if not 0 <= ops[0] < ops[1]:
            raise self.fail(f"{path}.ops", f"expected 0 <= start < end, got {list(ops)}")
        return PartEntry(
            file=self.get(obj, "file", path, str),
            sha256=self.get(obj, "sha256", path, str),
            ops=(ops[0], ops[1]),
            inputs=tuple(self.tensor(t, f"{path}.inputs[{i}]") for i, t in enumerate(ins)),
            outputs=tuple(self.tensor(t, f"{path}.outputs[{i}]") for i, t in enumerate(outs)),
            tiles=tuple(self.tile(t, f"{path}.tiles[{i}]", len(ins), len(outs))
                        for i, t in enumerate(tiles)),
        )

    def manifest(self, doc: Any) -> Manifest:
        version = self.get(doc, "version", "", int)
        if version != MANIFEST_VERSION:
            raise self.fail(
                "version",
                f"unsupported version {version} (this tilefleet reads {MANIFEST_VERSION})",
            )
        m = self.get(doc, "model", "", dict)
        names = [self.get(m, k, "model", list) for k in ("inputs", "outputs")]
        for k, lst in zip(("inputs", "outputs"), names, strict=True):
            if not all(isinstance(n, str) for n in lst):
                raise self.fail(f"model.{k}", "expected a list of tensor names")
        model = ModelEntry(self.get(m, "file", "model", str), self.get(m, "sha256", "model", str),
                           tuple(names[0]), tuple(names[1]))
        parts = self.get(doc, "parts", "", list)
        if not parts:
            raise self.fail("parts", "no parts")
        return Manifest(
            model, tuple(self.part(p, f"parts[{i}]") for i, p in enumerate(parts)), version
        )


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer",
             float: "a number", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def parse_manifest(doc: Any, source: str = "<manifest>") -> Manifest:
    """Validate a decoded manifest document into typed records."""
    return _Reader(source).manifest(doc)


def load_manifest(path: str | Path) -> Manifest:
    """Read DIR/manifest.json (or the given file); errors name the file and key."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    try:
        text = p.read_text()
    except OSError as exc:
        raise ManifestError(f"{p}: cannot read manifest ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{p}: not a JSON manifest (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_manifest(doc, str(p))


def check_chain(
    manifest: Manifest, model_inputs: Iterable[str], source: str = "<manifest>"
) -> None:
    """Check the chain can be followed by name: every part input is a model input or an
    earlier part's output, and every model output is produced by some part."""
    known = set(model_inputs)
    for k, part in enumerate(manifest.parts):
        for spec in part.inputs:
            if spec.name not in known:
                raise ManifestError(
                    f"{source}: parts[{k}].inputs: {spec.name!r} is neither a model "
                    f"input nor an output of an earlier part"
                )
        known.update(spec.name for spec in part.outputs)
    for name in manifest.model.outputs:
        if name not in known:
            raise ManifestError(f"{source}: model.outputs: no part produces {name!r}")
