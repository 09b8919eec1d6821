"""Ready-made test networks as .tflite bytes, shaped like the real architectures.

Every recipe takes `input_size`, `dtype` ("float32" | "int8"), `seed`, width options,
and passes any further keyword (io, fp16_weights, signature, metadata,
duplicate_names, calibration_samples) to `GraphBuilder.build`. The `*_graph` variants
return the unbuilt GraphBuilder. Inputs are NHWC float in [-1, 1] (or its int8 image).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from planner.modelbuild.builder import GraphBuilder
from planner.modelbuild.graph import Tensor, pair
from planner.modelbuild.randomdag import random_dag, random_dag_graph
from planner.modelbuild.stack import DEFAULT_STACK, StackLayer, conv_stack, conv_stack_graph

# MobileNetV2 inverted residual table: expansion t, channels c, repeats n, first stride s.
MOBILENET_V2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
VGG16_CONVS = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
RESNET_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def _divisible(v: float, divisor: int = 8) -> int:
    # MobileNet's rounding: nearest multiple of 8, never below 90% of the request.
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _scaled(c: int, width: float) -> int:
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(1, round(c * width))


def _image(g: GraphBuilder, input_size: int | tuple[int, int], channels: int = 3) -> Tensor:
    h, w = pair(input_size, "input_size")
    return g.input((1, h, w, channels), name="input")


def _classifier(g: GraphBuilder, x: Tensor, num_classes: int, prefix: str) -> Tensor:
    x = g.mean(x, name=f"{prefix}/mean")
    x = g.fully_connected(x, num_classes, name=f"{prefix}/logits")
    return g.softmax(x, name=f"{prefix}/softmax")


def _keras_pad(x: Tensor, kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    # keras.applications' correct_pad: the explicit PAD Keras puts before stride-2 VALID convs.
    c = kernel // 2
    return (c - (1 - x.shape[1] % 2), c), (c - (1 - x.shape[2] % 2), c)


def mobilenet_v2_like_graph(
    input_size: int | tuple[int, int] = 224, width: float = 1.0, num_classes: int = 1000
) -> GraphBuilder:
    """MobileNetV2 (Keras layout: PAD + VALID depthwise at stride 2) as an unbuilt graph."""
    g = GraphBuilder("mobilenet_v2_like")
    x = _image(g, input_size)
    x = g.conv2d(x, _divisible(32 * width), 3, 2, activation="RELU6", name="stem/conv")
    block = 0
    for t, c, n, s in MOBILENET_V2_BLOCKS:
        out_c = _divisible(c * width)
        for i in range(n):
            stride, inp, name = (s if i == 0 else 1), x, f"block{block}"
            if t != 1:
                x = g.conv2d(x, x.shape[3] * t, 1, activation="RELU6", name=f"{name}/expand")
            if stride == 2:
                x = g.pad(x, _keras_pad(x, 3), name=f"{name}/pad")
            x = g.depthwise_conv2d(
                x,
                3,
                stride,
                "VALID" if stride == 2 else "SAME",
                activation="RELU6",
                name=f"{name}/depthwise",
            )
            x = g.conv2d(x, out_c, 1, name=f"{name}/project")
            if stride == 1 and inp.shape == x.shape:
                x = g.add(inp, x, name=f"{name}/add")
            block += 1
    last = _divisible(1280 * width) if width > 1.0 else 1280
    x = g.conv2d(x, last, 1, activation="RELU6", name="head/conv")
    g.output(_classifier(g, x, num_classes, "head"))
    return g


def mobilenet_v2_like(
    input_size: int = 224,
    width: float = 1.0,
    num_classes: int = 1000,
    dtype: str = "float32",
    seed: int = 0,
    **build: Any,
) -> bytes:
    """MobileNetV2: inverted residual blocks, 1x1 conv 1280, MEAN, FC, SOFTMAX.

    A block is expand RELU6, depthwise RELU6, linear project, ADD.
    """
    return mobilenet_v2_like_graph(input_size, width, num_classes).build(dtype, seed, **build)


def vgg_like_graph(
    input_size: int | tuple[int, int] = 224,
    width: float = 1.0,
    num_classes: int = 1000,
    fc_units: int = 4096,
    convs: Sequence[int | str] = VGG16_CONVS,
) -> GraphBuilder:
    """VGG (default: the VGG16 table) as an unbuilt graph."""
    g = GraphBuilder("vgg_like")
    x = _image(g, input_size)
    stage, conv = 1, 1
    for item in convs:
        if item == "M":
            x = g.max_pool(x, 2, name=f"block{stage}/pool")
            stage, conv = stage + 1, 1
        else:
            x = g.conv2d(
                x, _scaled(int(item), width), 3, activation="RELU", name=f"block{stage}/conv{conv}"
            )
            conv += 1
    x = g.reshape(x, (1, -1), name="head/flatten")
    x = g.fully_connected(x, fc_units, activation="RELU", name="head/fc1")
    x = g.fully_connected(x, fc_units, activation="RELU", name="head/fc2")
    x = g.fully_connected(x, num_classes, name="head/logits")
    g.output(g.softmax(x, name="head/softmax"))
    return g


def vgg_like(
    input_size: int = 224,
    width: float = 1.0,
    num_classes: int = 1000,
    fc_units: int = 4096,
    dtype: str = "float32",
    seed: int = 0,
    **build: Any,
) -> bytes:
    """VGG16 layout: 3x3 conv RELU blocks + 2x2 max pools, RESHAPE, FC-FC-FC, SOFTMAX.

    width scales the convs.
    """
    return vgg_like_graph(input_size, width, num_classes, fc_units).build(dtype, seed, **build)


def _resnet_block(
    g: GraphBuilder, x: Tensor, kind: str, filters: int, stride: int, name: str
) -> Tensor:
    out_c = filters * 4 if kind == "bottleneck" else filters
    shortcut = x
    if stride != 1 or x.shape[3] != out_c:
        shortcut = g.conv2d(x, out_c, 1, stride, name=f"{name}/shortcut")
    if kind == "bottleneck":  # Keras ResNet50 (v1): the stride sits on the first 1x1 conv
        y = g.conv2d(x, filters, 1, stride, activation="RELU", name=f"{name}/conv1")
        y = g.conv2d(y, filters, 3, activation="RELU", name=f"{name}/conv2")
        y = g.conv2d(y, out_c, 1, name=f"{name}/conv3")
    else:
        y = g.conv2d(x, filters, 3, stride, activation="RELU", name=f"{name}/conv1")
        y = g.conv2d(y, out_c, 3, name=f"{name}/conv2")
    return g.add(shortcut, y, activation="RELU", name=f"{name}/add")


def resnet_like_graph(
    input_size: int | tuple[int, int] = 224,
    depth: int = 50,
    width: float = 1.0,
    num_classes: int = 1000,
) -> GraphBuilder:
    """ResNet-18/34 (basic blocks) or -50/101 (bottlenecks) as an unbuilt graph."""
    if depth not in RESNET_STAGES:
        raise ValueError(
            f"resnet_like: depth must be one of {sorted(RESNET_STAGES)}, got {depth!r}"
        )
    kind, repeats = RESNET_STAGES[depth]
    g = GraphBuilder(f"resnet{depth}_like")
    x = _image(g, input_size)
    x = g.pad(x, ((3, 3), (3, 3)), name="stem/pad")
    x = g.conv2d(x, _scaled(64, width), 7, 2, "VALID", activation="RELU", name="stem/conv")
    x = g.pad(x, ((1, 1), (1, 1)), name="stem/pool_pad")
    x = g.max_pool(x, 3, 2, name="stem/pool")
    for stage, n in enumerate(repeats):
        for i in range(n):
            stride = 2 if i == 0 and stage > 0 else 1
            x = _resnet_block(
                g, x, kind, _scaled(64 * 2**stage, width), stride, f"stage{stage + 1}/block{i + 1}"
            )
    g.output(_classifier(g, x, num_classes, "head"))
    return g


def resnet_like(
    input_size: int = 224,
    depth: int = 50,
    width: float = 1.0,
    num_classes: int = 1000,
    dtype: str = "float32",
    seed: int = 0,
    **build: Any,
) -> bytes:
    """ResNet: PAD+7x7 stem, max pool, residual stages, MEAN, FC, SOFTMAX.

    The residual stages have 1x1 projection shortcuts and ADD+RELU.
    """
    return resnet_like_graph(input_size, depth, width, num_classes).build(dtype, seed, **build)


def yolo_like_graph(
    input_size: int | tuple[int, int] = 416,
    width: float = 1.0,
    num_classes: int = 80,
    anchors: int = 3,
) -> GraphBuilder:
    """Tiny-YOLOv3 layout with two detection heads (strides 32 and 16) as an unbuilt graph."""
    h, w = pair(input_size, "input_size")
    if h % 32 or w % 32:
        raise ValueError(f"yolo_like: input_size must be a multiple of 32, got {input_size!r}")
    g = GraphBuilder("yolo_like")
    x = _image(g, (h, w))
    det = anchors * (5 + num_classes)

    def conv(x: Tensor, c: int, k: int, name: str) -> Tensor:
        return g.leaky_relu(
            g.conv2d(x, _scaled(c, width), k, name=f"{name}/conv"), 0.1, name=f"{name}/leaky"
        )

    route16 = x
    for i, c in enumerate((16, 32, 64, 128, 256, 512)):
        x = conv(x, c, 3, f"backbone{i}")
        if c == 256:
            route16 = x
        # The sixth pool keeps the stride at 32 (size 2, stride 1, SAME) as in tiny-YOLOv3.
        x = (
            g.max_pool(x, 2, 1, "SAME", name=f"backbone{i}/pool")
            if c == 512
            else g.max_pool(x, 2, name=f"backbone{i}/pool")
        )
    x = conv(x, 1024, 3, "backbone6")
    route32 = conv(x, 256, 1, "neck")
    y = conv(route32, 512, 3, "head1")
    out1 = g.conv2d(y, det, 1, name="head1/detect")
    y = conv(route32, 128, 1, "up")
    y = g.resize_nearest_neighbor(y, 2, name="up/resize")
    y = g.concatenation([y, route16], name="up/concat")
    y = conv(y, 256, 3, "head2")
    out2 = g.conv2d(y, det, 1, name="head2/detect")
    g.output(out1, out2)
    return g


def yolo_like(
    input_size: int = 416,
    width: float = 1.0,
    num_classes: int = 80,
    dtype: str = "float32",
    seed: int = 0,
    **build: Any,
) -> bytes:
    """Tiny-YOLOv3: conv+LEAKY_RELU+max-pool backbone, two detection outputs.

    The second head uses RESIZE_NEAREST_NEIGHBOR + CONCATENATION.
    """
    return yolo_like_graph(input_size, width, num_classes).build(dtype, seed, **build)


def early_exit_like_graph(
    input_size: int | tuple[int, int] = 64, width: float = 1.0, num_classes: int = 10
) -> GraphBuilder:
    """Four conv stages with exit classifiers after stages 1 and 2 and a final head."""
    g = GraphBuilder("early_exit_like")
    x = _image(g, input_size)
    exits = []
    for stage, c in enumerate((32, 64, 128, 256), start=1):
        c = _scaled(c, width)
        x = g.conv2d(x, c, 3, 2, activation="RELU", name=f"stage{stage}/conv1")
        x = g.conv2d(x, c, 3, activation="RELU", name=f"stage{stage}/conv2")
        if stage <= 2:  # the exit branch follows its stage, as a converter orders it
            e = g.conv2d(x, c, 3, 2, activation="RELU", name=f"exit{stage}/conv")
            exits.append(_classifier(g, e, num_classes, f"exit{stage}"))
    g.output(*exits, _classifier(g, x, num_classes, "final"))
    return g


def early_exit_like(
    input_size: int = 64,
    width: float = 1.0,
    num_classes: int = 10,
    dtype: str = "float32",
    seed: int = 0,
    **build: Any,
) -> bytes:
    """Conv backbone with two early-exit heads and the final head: three outputs.

    An early-exit head is conv, MEAN, FC, SOFTMAX.
    """
    return early_exit_like_graph(input_size, width, num_classes).build(dtype, seed, **build)


RECIPES: dict[str, Callable[..., bytes]] = {
    "mobilenet_v2": mobilenet_v2_like,
    "vgg": vgg_like,
    "resnet": resnet_like,
    "yolo": yolo_like,
    "early_exit": early_exit_like,
    "conv_stack": conv_stack,
    "random_dag": random_dag,
}

__all__ = [
    "DEFAULT_STACK",
    "RECIPES",
    "StackLayer",
    "conv_stack",
    "conv_stack_graph",
    "early_exit_like",
    "early_exit_like_graph",
    "mobilenet_v2_like",
    "mobilenet_v2_like_graph",
    "random_dag",
    "random_dag_graph",
    "resnet_like",
    "resnet_like_graph",
    "vgg_like",
    "vgg_like_graph",
    "yolo_like",
    "yolo_like_graph",
]
