#!/usr/bin/env python3
"""Export keras.applications models to float32 and int8 .tflite (optional model zoo).

Needs TensorFlow (`pip install -e '.[zoo]'`); nothing else in tilefleet does. Weights are
not downloaded (weights=None): the models are re-initialised so activations neither
vanish nor explode (He-normal kernels, random BatchNorm statistics), which is what
exactness and speed experiments need. int8 uses a random representative dataset.

    python tools/export_zoo.py -o zoo/ --models mobilenet_v2 resnet50 --size 224
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("mobilenet_v2", "resnet50", "vgg16", "efficientnet_b0", "mobilenet_v2_early_exit")
# Where the early-exit heads branch off MobileNetV2 (keras layer names).
EARLY_EXITS = ("block_3_project_BN", "block_10_project_BN")


def _import_tf():
    try:
        import tensorflow as tf  # noqa: PLC0415 (optional dependency)
    except ImportError:
        sys.exit("export_zoo: TensorFlow is not installed (pip install -e '.[zoo]')")
    return tf


def _reinitialise(tf, model, seed: int) -> None:
    """He-normal kernels and random BatchNorm stats, so activations stay informative."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        name = type(layer).__name__
        new = []
        if name == "BatchNormalization":
            for w, role in zip(weights, ("gamma", "beta", "mean", "var"), strict=False):
                if role == "gamma":
                    new.append(rng.uniform(0.5, 1.5, w.shape))
                elif role == "beta":
                    new.append(rng.normal(0.0, 0.1, w.shape))
                elif role == "mean":
                    new.append(rng.normal(0.0, 0.1, w.shape))
                else:
                    new.append(rng.uniform(0.5, 1.5, w.shape))
        else:
            for w in weights:
                if w.ndim >= 2:
                    fan_in = (
                        int(np.prod(w.shape[:-1]))
                        if name != "DepthwiseConv2D"
                        else int(np.prod(w.shape[:2]))
                    )
                    new.append(rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), w.shape))
                else:
                    new.append(rng.normal(0.0, 0.05, w.shape))
        layer.set_weights([x.astype(np.float32) for x in new])


def build(tf, name: str, size: int, seed: int):
    """A keras model with batch size 1 (avoids SHAPE/STRIDED_SLICE from a None batch)."""
    apps = tf.keras.applications
    inp = tf.keras.Input(shape=(size, size, 3), batch_size=1)
    if name == "mobilenet_v2":
        model = apps.MobileNetV2(input_tensor=inp, weights=None)
    elif name == "resnet50":
        model = apps.ResNet50(input_tensor=inp, weights=None)
    elif name == "vgg16":
        model = apps.VGG16(input_tensor=inp, weights=None)
    elif name == "efficientnet_b0":
        model = apps.EfficientNetB0(input_tensor=inp, weights=None)
    elif name == "mobilenet_v2_early_exit":
        base = apps.MobileNetV2(input_tensor=inp, weights=None)
        heads = []
        for k, layer_name in enumerate(EARLY_EXITS):
            x = tf.keras.layers.GlobalAveragePooling2D(name=f"exit{k}_pool")(
                base.get_layer(layer_name).output
            )
            heads.append(tf.keras.layers.Dense(1000, activation="softmax", name=f"exit{k}_fc")(x))
        model = tf.keras.Model(inp, [*heads, base.output], name=name)
    else:
        raise SystemExit(f"export_zoo: unknown model {name!r} (choose from {', '.join(MODELS)})")
    _reinitialise(tf, model, seed)
    return model


def convert(tf, model, size: int, int8: bool, samples: int, seed: int) -> bytes:
    """TFLite flatbuffer bytes; int8 = full-integer with int8 input and output."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(seed)

        def representative():
            for _ in range(samples):
                yield [rng.uniform(-1.0, 1.0, (1, size, size, 3)).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def main(argv: list[str] | None = None) -> int:
    """Export the chosen models; print one line per file and write zoo.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "int8"], choices=["float32", "int8"])
    ap.add_argument("--samples", type=int, default=8, help="representative samples for int8")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    tf = _import_tf()
    args.out.mkdir(parents=True, exist_ok=True)
    index = []
    for name in args.models:
        model = build(tf, name, args.size, args.seed)
        for dtype in args.dtypes:
            t0 = time.perf_counter()
            data = convert(tf, model, args.size, dtype == "int8", args.samples, args.seed)
            path = args.out / f"{name}_{args.size}_{dtype}.tflite"
            path.write_bytes(data)
            secs = time.perf_counter() - t0
            index.append({"model": name, "dtype": dtype, "size": args.size, "file": path.name,
                          "bytes": len(data), "convert_s": round(secs, 2)})
            print(f"{path}  {len(data) / 1e6:.1f} MB  {secs:.1f} s")
    (args.out / "zoo.json").write_text(json.dumps(index, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
