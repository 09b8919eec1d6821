"""Small random DAGs of tileable and non-tileable ops with skip connections (property tests)."""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.modelbuild.builder import GraphBuilder
from planner.modelbuild.graph import Tensor, pair

TILEABLE = (
    "conv",
    "depthwise",
    "max_pool",
    "avg_pool",
    "pad",
    "activation",
    "add",
    "concat",
    "resize",
)
_WEIGHTS = {
    "conv": 4,
    "depthwise": 2,
    "max_pool": 1,
    "avg_pool": 1,
    "pad": 1,
    "activation": 1,
    "add": 2,
    "concat": 2,
    "resize": 1,
    "se": 1,
}


class _Dag:
    """Grows one random graph; every choice comes from one seeded Generator."""

    def __init__(self, seed: int, input_size: int | tuple[int, int], channels: int) -> None:
        self.rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xDA6])
        self.g = GraphBuilder(f"random_dag_{seed}")
        self.channels = channels
        self.hw = pair(input_size, "input_size")
        x = self.g.input((1, *self.hw, 3), name="input")
        self.pool: list[Tensor] = [
            self.g.conv2d(x, channels, 3, activation="RELU", name="op0/conv")
        ]

    def name(self, kind: str) -> str:
        return f"op{len(self.g.ir.ops)}/{kind}"

    def pick(self, options: list[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def window(
        self, x: Tensor, kernels: list[int], dilations: list[int]
    ) -> tuple[int, int, str, int]:
        """Random kernel, stride, padding, dilation that give a non-empty output."""
        k = self.pick(kernels)
        d = self.pick(dilations) if k > 1 else 1
        small = min(x.shape[1], x.shape[2])
        s = self.pick([1, 2]) if small >= 4 else 1
        padding = self.pick(["SAME", "VALID"]) if d * (k - 1) + 1 <= small else "SAME"
        return k, s, padding, d

    def partner(self, x: Tensor, same_channels: bool) -> Tensor | None:
        """An earlier tensor that can be added (same shape) or concatenated (same H, W) to x."""
        fits = [
            t
            for t in self.pool
            if t is not x
            and t.shape[1:3] == x.shape[1:3]
            and (t.shape[3] == x.shape[3] or not same_channels)
        ]
        return self.pick(fits) if fits else None

    def step(self, kind: str) -> None:
        g, rng = self.g, self.rng
        x = self.pool[-1] if rng.random() < 0.7 else self.pick(self.pool)
        c = x.shape[3]
        if kind == "conv":
            k, s, p, d = self.window(x, [1, 3, 5], [1, 1, 2])
            filters = self.pick([max(1, self.channels // 2), self.channels, self.channels * 2])
            y = g.conv2d(
                x, filters, k, s, p, d, self.pick(["NONE", "RELU", "RELU6"]), name=self.name("conv")
            )
        elif kind == "depthwise":
            k, s, p, d = self.window(x, [3, 5], [1, 1, 2])
            y = g.depthwise_conv2d(
                x, k, s, p, d, 1, self.pick(["NONE", "RELU", "RELU6"]), name=self.name("depthwise")
            )
        elif kind in ("max_pool", "avg_pool"):
            k, s, p, _ = self.window(x, [2, 3], [1])
            pool = g.max_pool if kind == "max_pool" else g.avg_pool
            y = pool(x, k, s, p, name=self.name(kind))
        elif kind == "pad":
            t, b, lft, r = (int(v) for v in rng.integers(0, 3, size=4))
            y = g.pad(x, ((t, b or 1), (lft, r)), name=self.name("pad"))
        elif kind == "activation":
            act = self.pick(["relu", "relu6", "hard_swish", "leaky_relu"])
            y = getattr(g, act)(x, name=self.name(act))
        elif kind in ("add", "concat"):
            other = self.partner(x, same_channels=kind == "add")
            if other is None or (kind == "concat" and c + other.shape[3] > 4 * self.channels):
                # No usable skip source: make one, a 1x1 branch off x (a residual block).
                other = g.conv2d(x, c, 1, activation="RELU", name=self.name("branch"))
            if kind == "add":
                y = g.add(x, other, self.pick(["NONE", "RELU"]), name=self.name("add"))
            else:
                y = g.concatenation([x, other], name=self.name("concat"))
        elif kind == "resize":
            y = g.resize_nearest_neighbor(x, 2, name=self.name("resize"))
        else:  # squeeze-excite: MEAN, two 1x1 convs, LOGISTIC gate, broadcast MUL
            s = g.mean(x, keep_dims=True, name=self.name("se_mean"))
            s = g.conv2d(s, max(1, c // 2), 1, activation="RELU", name=self.name("se_reduce"))
            s = g.logistic(
                g.conv2d(s, c, 1, name=self.name("se_expand")), name=self.name("se_gate")
            )
            y = g.mul(x, s, name=self.name("se_mul"))
        self.pool.append(y)

    def kinds(self, tileable_only: bool) -> tuple[list[str], np.ndarray]:
        """Allowed op kinds now and their probabilities."""
        x = self.pool[-1]
        kinds = [k for k in _WEIGHTS if k in TILEABLE or not tileable_only]
        if x.shape[1] > 2 * self.hw[0] or x.shape[2] > 2 * self.hw[1]:
            kinds.remove("resize")  # keep feature maps small
        w = np.array([_WEIGHTS[k] for k in kinds], dtype=np.float64)
        return kinds, w / w.sum()


def random_dag_graph(
    seed: int = 0,
    n_ops: int = 10,
    input_size: int | tuple[int, int] = 16,
    channels: int = 8,
    tileable_only: bool = False,
) -> GraphBuilder:
    """Random DAG with about `n_ops` ops; every unconsumed tensor is a graph output."""
    if not isinstance(n_ops, int) or n_ops < 1:
        raise ValueError(f"random_dag: n_ops must be a positive int, got {n_ops!r}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"random_dag: channels must be a positive int, got {channels!r}")
    dag = _Dag(seed, input_size, channels)
    while len(dag.g.ir.ops) < n_ops:
        kinds, p = dag.kinds(tileable_only)
        dag.step(str(dag.rng.choice(kinds, p=p)))
    g = dag.g
    if not tileable_only and dag.rng.random() < 0.5:  # a classifier head the tiler must stop at
        x = dag.pool[-1]
        x = (
            g.mean(x, name="head/mean")
            if dag.rng.random() < 0.5
            else g.reshape(x, (1, -1), name="head/flatten")
        )
        g.softmax(g.fully_connected(x, 10, name="head/logits"), name="head/softmax")
    consumed = {t for op in g.ir.ops for t in op.inputs}
    leaves = [op.output for op in g.ir.ops if op.output not in consumed]
    g.ir.outputs.extend(leaves)
    return g


def random_dag(
    seed: int = 0,
    n_ops: int = 10,
    input_size: int | tuple[int, int] = 16,
    channels: int = 8,
    dtype: str = "float32",
    tileable_only: bool = False,
    **build: Any,
) -> bytes:
    """Random DAG of conv/depthwise/pool/PAD/activation/ADD/CONCATENATION/resize.

    Plus squeeze-excite and heads unless tileable_only.
    """
    return random_dag_graph(seed, n_ops, input_size, channels, tileable_only).build(
        dtype, seed, **build
    )
