"""conv_stack: a configurable straight stack of tileable layers, the tiler's test target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from planner.modelbuild.builder import GraphBuilder
from planner.modelbuild.graph import Tensor, pair


@dataclass(frozen=True)
class StackLayer:
    """One conv_stack layer: kind conv | depthwise | max_pool | avg_pool | pad | add."""

    kind: str
    kernel: int = 3
    stride: int = 1
    padding: str = "SAME"
    dilation: int = 1
    filters: int | None = None  # conv only; None keeps the channel count
    activation: str = "RELU"  # conv, depthwise and add
    pads: tuple[int, int, int, int] = (1, 1, 1, 1)  # pad only: top, bottom, left, right
    skip: int = 2  # add only: at layer i, add the outputs of layers i-1 and i-1-skip (0 = input)


DEFAULT_STACK = (
    StackLayer("conv"),
    StackLayer("conv", stride=2),
    StackLayer("depthwise", activation="RELU6"),
    StackLayer("conv", kernel=1, activation="NONE"),
    StackLayer("add", skip=2, activation="NONE"),
    StackLayer("conv", padding="VALID", dilation=2),
    StackLayer("max_pool", kernel=2, stride=2, padding="VALID"),
    StackLayer("pad", pads=(1, 1, 1, 1)),
    StackLayer("conv", padding="VALID"),
    StackLayer("depthwise", stride=2),
    StackLayer("avg_pool", kernel=3, stride=1, padding="SAME"),
    StackLayer("conv", kernel=5, stride=1),
    StackLayer("pad", pads=(0, 1, 0, 1)),
    StackLayer("depthwise", stride=2, padding="VALID", dilation=1),
)


def conv_stack_graph(
    input_size: int | tuple[int, int] = 64,
    channels: int = 16,
    layers: Sequence[StackLayer] = DEFAULT_STACK,
) -> GraphBuilder:
    """A straight stack of tileable layers (plus residual ADDs) as an unbuilt graph."""
    g = GraphBuilder("conv_stack")
    h, w = pair(input_size, "input_size")
    outs: list[Tensor] = [g.input((1, h, w, 3), name="input")]
    for i, ly in enumerate(layers, start=1):
        x, name = outs[-1], f"layer{i}/{ly.kind}"
        if ly.kind == "conv":
            x = g.conv2d(
                x,
                ly.filters or channels,
                ly.kernel,
                ly.stride,
                ly.padding,
                ly.dilation,
                ly.activation,
                name=name,
            )
        elif ly.kind == "depthwise":
            x = g.depthwise_conv2d(
                x, ly.kernel, ly.stride, ly.padding, ly.dilation, 1, ly.activation, name=name
            )
        elif ly.kind in ("max_pool", "avg_pool"):
            pool = g.max_pool if ly.kind == "max_pool" else g.avg_pool
            x = pool(x, ly.kernel, ly.stride, ly.padding, name=name)
        elif ly.kind == "pad":
            t, b, lft, r = ly.pads
            x = g.pad(x, ((t, b), (lft, r)), name=name)
        elif ly.kind == "add":
            src = len(outs) - 1 - ly.skip
            if src < 1 or outs[src].shape != x.shape:
                raise ValueError(
                    f"conv_stack: layer {i} (add, skip={ly.skip}) has no earlier layer output "
                    f"of shape {x.shape}"
                )
            x = g.add(outs[src], x, ly.activation, name=name)
        else:
            raise ValueError(f"conv_stack: layer {i} has unknown kind {ly.kind!r}")
        outs.append(x)
    g.output(outs[-1])
    return g


def conv_stack(
    input_size: int | tuple[int, int] = 64,
    channels: int = 16,
    layers: Sequence[StackLayer] = DEFAULT_STACK,
    dtype: str = "float32",
    seed: int = 0,
    **build: Any,
) -> bytes:
    """Configurable stack of conv/depthwise/pool/PAD/ADD layers.

    Stride 1 and 2, SAME and VALID, dilation.
    """
    return conv_stack_graph(input_size, channels, layers).build(dtype, seed, **build)
