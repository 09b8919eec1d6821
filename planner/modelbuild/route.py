"""A YOLOv5/v8-like neck as a test network: SiLU convs, a residual, FPN and PAN routes.

Every op of it may sit in one fused-tile stack (planner/model/halo.py): SiLU is
LOGISTIC * MUL, the FPN upsample is RESIZE_NEAREST_NEIGHBOR by 2, routes are channel
CONCATENATIONs of two resolutions, and the two detection outputs have strides 2 and 4.
Cuts inside it are crossed by two or three tensors (residual and route branches).
"""

from __future__ import annotations

from typing import Any

from planner.modelbuild.builder import GraphBuilder
from planner.modelbuild.graph import Tensor, pair


def yolo_route_like_graph(input_size: int | tuple[int, int] = 32, width: int = 8,
                          num_classes: int = 2) -> GraphBuilder:
    """Stem, two stride-2 SiLU convs, a residual block, an FPN (upsample + concat) and a
    PAN (stride-2 conv + concat) route, two heads, as an unbuilt graph."""
    h, w = pair(input_size, "input_size")
    if h % 4 or w % 4:
        raise ValueError(f"yolo_route_like: input_size must be a multiple of 4, got {input_size!r}")
    g = GraphBuilder("yolo_route_like")
    det = 3 * (5 + num_classes)

    def silu_conv(x: Tensor, c: int, k: int, s: int, name: str) -> Tensor:
        y = g.conv2d(x, c, k, s, name=f"{name}/conv")
        return g.mul(y, g.logistic(y, name=f"{name}/sigmoid"), name=f"{name}/silu")

    x = silu_conv(g.input((1, h, w, 3)), width, 3, 1, "stem")
    p3 = silu_conv(x, 2 * width, 3, 2, "down1")  # stride 2
    y = silu_conv(p3, 2 * width, 3, 2, "down2")  # stride 4
    inner = silu_conv(silu_conv(y, width, 1, 1, "c3/cv1"), 2 * width, 3, 1, "c3/cv2")
    p4 = g.add(y, inner, name="c3/add")
    up = g.resize_nearest_neighbor(silu_conv(p4, width, 1, 1, "fpn/lateral"), 2, name="fpn/up")
    n3 = silu_conv(g.concatenation([up, p3], name="fpn/concat"), 2 * width, 3, 1, "fpn/c3")
    out_p3 = g.conv2d(n3, det, 1, name="head_p3/detect")
    down = silu_conv(n3, 2 * width, 3, 2, "pan/down")
    n4 = silu_conv(g.concatenation([down, p4], name="pan/concat"), 2 * width, 3, 1, "pan/c3")
    out_p4 = g.conv2d(n4, det, 1, name="head_p4/detect")
    g.output(out_p3, out_p4)
    return g


def yolo_route_like(input_size: int = 32, width: int = 8, num_classes: int = 2,
                    dtype: str = "float32", seed: int = 0, **build: Any) -> bytes:
    """The YOLO-like neck (SiLU = LOGISTIC*MUL, RESIZE_NEAREST_NEIGHBOR + CONCATENATION routes,
    a residual ADD, outputs at strides 2 and 4) as .tflite bytes."""
    return yolo_route_like_graph(input_size, width, num_classes).build(dtype, seed, **build)
