"""Cut standalone .tflite parts out of a model: op ranges, chains, sub-DAGs between tensors.

A pure transform on the in-memory ModelT of a `ModelGraph`: this module decides which
ops and boundary tensors a part has; `planner.model.partpack` builds its ModelT from shallow
copies and buffer views and packs it once, so cutting never deep-copies the model.

Boundary order (the contract the manifest records; parts chain by tensor name):
- `cut_range`/`cut_at` inputs: model inputs first, in model-input order, then the other
  tensors in order of first use inside the part (op order, then operand position).
- `cut_range`/`cut_at` outputs: model outputs first, in model-output order, then the
  other crossing tensors in order of production (op order, then output position).
- `cut_between`: inputs and outputs in the order the caller named them.
Tensor names in the part are the graph's unique names (`ModelGraph` renames repeats).
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass

from planner.errors import CutError
from planner.model.graph import ModelGraph
from planner.model.manifest import TensorSpec
from planner.model.partpack import pack_part


@dataclass(frozen=True)
class Part:
    """A standalone .tflite holding some ops of a model, with its boundary tensors."""

    data: bytes
    sha256: str
    span: tuple[int, int]  # [start, end) of the op range (cut_between: smallest covering range)
    ops: tuple[int, ...]  # source op indices in the part, copied constant producers included
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


# ---- public API ----------------------------------------------------------------------
def cut_range(graph: ModelGraph, start: int, end: int) -> Part:
    """Cut the ops [start, end) into a standalone part (boundary rules: docs/cutting.md)."""
    _refuse_unsupported(graph)
    n = len(graph.ops)
    if not (0 <= start < end <= n):
        raise CutError(
            f"{graph.source}: cannot cut ops [{start}, {end}): need 0 <= start < end <= {n}"
        )
    derived = graph.const_derived
    outs = set(graph.outputs)
    # Const-derived ops are recomputed wherever needed instead of owned by one range,
    # except when they produce a model output (then the range holding them owns it).
    core = [k for k in range(start, end)
            if not folds_constants(graph, k) or any(t in outs for t in graph.ops[k].outputs)]
    ops = _with_const_producers(graph, core)
    produced = {t for k in ops for t in graph.ops[k].outputs}
    in_ids = _first_use(graph, ops, produced)
    out_ids = []
    for k in core:
        for t in graph.ops[k].outputs:
            later = any(c >= end for c in graph.consumers.get(t, ()))
            if t in outs or (later and t not in derived):
                out_ids.append(t)
    if not out_ids:
        raise CutError(f"{graph.source}: ops [{start}, {end}) compute nothing used later "
                       f"(only constant folding or dead ops); move the cut")
    out_ids = _model_order_first(graph.outputs, out_ids)
    _check_variables(graph, ops, set(range(start, end)))
    return _make_part(graph, ops, in_ids, out_ids, (start, end))


def cut_at(graph: ModelGraph, points: list[int] | tuple[int, ...]) -> list[Part]:
    """Cut the model into a chain of parts at the cut points (part k: [p_k, p_k+1))."""
    n = len(graph.ops)
    pts = list(points)
    for i, p in enumerate(pts):
        try:
            pts[i] = operator.index(p)  # ints and numpy integers, never bools or floats
        except TypeError:
            raise CutError(f"{graph.source}: cut point {p!r} is not an op index") from None
        if isinstance(p, bool):
            raise CutError(f"{graph.source}: cut point {p!r} is not an op index")
    for p in pts:
        if not 0 < p < n:
            raise CutError(f"{graph.source}: cut point {p} out of range: must be 1..{n - 1} "
                           f"(the model has {n} ops)")
    for a, b in zip(pts, pts[1:], strict=False):
        if b <= a:
            raise CutError(f"{graph.source}: cut points must be strictly increasing ({a} then {b})")
    bounds = [0, *pts, n]
    return [cut_range(graph, a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def cut_between(graph: ModelGraph, input_names: list[str], output_names: list[str]) -> Part:
    """Cut the ops that compute the named outputs from the named inputs (plus constants)."""
    _refuse_unsupported(graph)
    in_ids = [_lookup(graph, name, "input") for name in input_names]
    out_ids = [_lookup(graph, name, "output") for name in output_names]
    if not out_ids:
        raise CutError(f"{graph.source}: cut_between needs at least one output tensor")
    for ids, what in ((in_ids, "input"), (out_ids, "output")):
        if len(set(ids)) != len(ids):
            raise CutError(f"{graph.source}: a part {what} tensor is named twice")
    for t in in_ids:
        info = graph.tensors[t]
        if graph.is_static(t) or info.is_variable:
            raise CutError(f"{graph.source}: tensor {info.name!r} is a constant or variable, "
                           f"not a valid part input")
        if t in out_ids:
            raise CutError(f"{graph.source}: tensor {info.name!r} is both a part input and output")
    given = set(in_ids)
    needed: set[int] = set()
    used: set[int] = set()
    stack = list(out_ids)
    seen: set[int] = set()
    while stack:  # walk producers backwards, stopping at the given inputs and constants
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in given:
            used.add(t)
            continue
        info = graph.tensors[t]
        if info.is_constant or info.is_variable:
            continue
        k = graph.producer.get(t)
        if k is None:
            raise CutError(f"{graph.source}: outputs {list(output_names)} are not computable from "
                           f"inputs {list(input_names)}: they need tensor {info.name!r}")
        needed.add(k)
        stack.extend(i for i in graph.ops[k].inputs if i >= 0)
    unused = [graph.tensors[t].name for t in in_ids if t not in used]
    if unused:
        raise CutError(
            f"{graph.source}: part input(s) {unused} are not needed "
            f"for outputs {list(output_names)}"
        )
    ops = sorted(needed)
    _check_variables(graph, ops, set(ops))
    real = [k for k in ops if not folds_constants(graph, k)] or ops
    return _make_part(graph, ops, in_ids, out_ids, (real[0], real[-1] + 1))


# ---- boundary analysis -------------------------------------------------------------
def _refuse_unsupported(graph: ModelGraph) -> None:
    flow = graph.control_flow_ops()
    # Besides WHILE/IF/CALL_ONCE, StableHLO ops (composite, reduce, sort...) name subgraphs
    # in their options; only subgraph 0 is copied, so refuse any op that refers to one.
    flow += [op for op in graph.ops if op not in flow and _refers_to_subgraph(graph, op.index)]
    if flow:
        op = min(flow, key=lambda o: o.index)
        raise CutError(f"{graph.source}: op {op.index} ({op.type}) calls another subgraph; "
                       f"models with control flow cannot be cut")
    for t in graph.subgraph.tensors or []:
        if getattr(t, "externalBuffer", 0):
            raise CutError(f"{graph.source}: tensor {t.name!r} keeps its weights in an external "
                           f"file; such models cannot be cut")


def _refers_to_subgraph(graph: ModelGraph, k: int) -> bool:
    op = graph.subgraph.operators[k]
    for opts in (op.builtinOptions, getattr(op, "builtinOptions2", None)):
        if opts is not None and any("ubgraph" in key for key in vars(opts)):
            return True
    return False


def folds_constants(graph: ModelGraph, k: int) -> bool:
    """True for op k when it only computes from constants (fp16 DEQUANTIZE, DENSIFY): it is
    copied into the parts that need it, so a range of only such ops is not a part."""
    outs = graph.ops[k].outputs
    return bool(outs) and all(t in graph.const_derived for t in outs)


def _with_const_producers(graph: ModelGraph, core: list[int]) -> list[int]:
    ops = set(core)
    stack = [t for k in core for t in graph.ops[k].inputs if t in graph.const_derived]
    while stack:
        k = graph.producer[stack.pop()]
        if k not in ops:
            ops.add(k)
            stack.extend(t for t in graph.ops[k].inputs if t in graph.const_derived)
    return sorted(ops)


def _first_use(graph: ModelGraph, ops: list[int], produced: set[int]) -> list[int]:
    found: list[int] = []
    for k in ops:
        for t in graph.ops[k].inputs:
            if t < 0 or t in produced or t in found:
                continue
            info = graph.tensors[t]
            if info.is_constant or info.is_variable:
                continue
            found.append(t)
    return _model_order_first(graph.inputs, found)


def _model_order_first(model_ids: tuple[int, ...], ids: list[int]) -> list[int]:
    chosen = set(ids)
    first = [t for t in model_ids if t in chosen]
    return first + [t for t in ids if t not in set(first)]


def _check_variables(graph: ModelGraph, ops: list[int], owned: set[int]) -> None:
    # A variable (stateful) tensor must live in exactly one part, or its state would fork.
    for k in ops:
        for t in graph.ops[k].inputs:
            if t >= 0 and graph.tensors[t].is_variable:
                outside = [c for c in graph.consumers.get(t, ()) if c not in owned]
                if outside:
                    raise CutError(
                        f"{graph.source}: variable tensor {graph.tensors[t].name!r} is used "
                        f"by op {k} and op {outside[0]}, which would be in different parts"
                    )


def _lookup(graph: ModelGraph, name: str, what: str) -> int:
    idx = graph.by_name.get(name)
    if idx is None:
        raise CutError(f"{graph.source}: no tensor named {name!r} (part {what})")
    return idx


def _spec(graph: ModelGraph, t: int) -> TensorSpec:
    info = graph.tensors[t]
    scale, zp = info.quant()
    return TensorSpec(info.name, info.shape, info.dtype, scale, zp)


def _make_part(graph: ModelGraph, ops: list[int], in_ids: list[int], out_ids: list[int],
               span: tuple[int, int]) -> Part:
    data = pack_part(graph, ops, in_ids, out_ids)
    return Part(data=data, sha256=hashlib.sha256(data).hexdigest(), span=span, ops=tuple(ops),
                inputs=tuple(_spec(graph, t) for t in in_ids),
                outputs=tuple(_spec(graph, t) for t in out_ids))
