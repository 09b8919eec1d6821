"""In-process .tflite test models: a GraphBuilder, int8 quantization without TF, and recipes.

    g = GraphBuilder("tiny")
    x = g.conv2d(g.input((1, 32, 32, 3)), 8, 3, 2, activation="RELU6", name="stem")
    g.output(g.softmax(g.fully_connected(g.mean(x), 10, name="logits"), name="probs"))
    model = g.build("int8", seed=1)                      # .tflite bytes
    ys = run_float(model, sample_floats_for(model, 0))   # float in, float out

or a ready-made network: `RECIPES["mobilenet_v2"](input_size=96, dtype="int8")`.
"""

from planner.modelbuild.builder import GraphBuilder
from planner.modelbuild.emit import SIGNATURE_KEY, BuildOptions
from planner.modelbuild.graph import Tensor
from planner.modelbuild.inputs import (
    TensorIO,
    dequantize_outputs,
    io_details,
    run_float,
    sample_floats_for,
    sample_inputs,
    to_model_inputs,
)
from planner.modelbuild.recipes import (
    DEFAULT_STACK,
    RECIPES,
    StackLayer,
    conv_stack,
    conv_stack_graph,
    early_exit_like,
    early_exit_like_graph,
    mobilenet_v2_like,
    mobilenet_v2_like_graph,
    random_dag,
    random_dag_graph,
    resnet_like,
    resnet_like_graph,
    vgg_like,
    vgg_like_graph,
    yolo_like,
    yolo_like_graph,
)

__all__ = [
    "DEFAULT_STACK",
    "RECIPES",
    "SIGNATURE_KEY",
    "BuildOptions",
    "GraphBuilder",
    "StackLayer",
    "Tensor",
    "TensorIO",
    "conv_stack",
    "conv_stack_graph",
    "dequantize_outputs",
    "early_exit_like",
    "early_exit_like_graph",
    "io_details",
    "mobilenet_v2_like",
    "mobilenet_v2_like_graph",
    "random_dag",
    "random_dag_graph",
    "resnet_like",
    "resnet_like_graph",
    "run_float",
    "sample_floats_for",
    "sample_inputs",
    "to_model_inputs",
    "vgg_like",
    "vgg_like_graph",
    "yolo_like",
    "yolo_like_graph",
]
