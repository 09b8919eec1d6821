"""Pick a TFLite runtime at import time and build interpreters with explicit settings.

ai-edge-litert is preferred (numpy 1 and 2, int8 on XNNPACK); tflite-runtime is the
fallback for boards without litert wheels (it needs numpy<2). Both expose the same
Interpreter API, so the rest of tilefleet only talks to `make_interpreter`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from node.errors import RuntimeUnavailable

_PREFERENCE = ("ai_edge_litert", "tflite_runtime")


def _import_runtime() -> tuple[str, str, Any]:
    # TILEFLEET_RUNTIME is a debug switch to force one runtime when both are installed.
    forced = os.environ.get("TILEFLEET_RUNTIME")
    order = (forced,) if forced else _PREFERENCE
    errors = []
    for name in order:
        try:
            if name == "ai_edge_litert":
                from importlib.metadata import version

                from ai_edge_litert import interpreter as mod  # type: ignore[import-not-found]

                return name, version("ai-edge-litert"), mod
            if name == "tflite_runtime":
                import tflite_runtime  # type: ignore[import-not-found]
                from tflite_runtime import interpreter as mod  # type: ignore[import-not-found]

                return name, getattr(tflite_runtime, "__version__", "unknown"), mod
            errors.append(f"{name}: unknown runtime")
        except Exception as exc:  # ImportError, or numpy ABI errors from tflite_runtime
            errors.append(f"{name}: {exc}")
    raise RuntimeUnavailable("no TFLite runtime importable (" + "; ".join(errors) + ")")


_RUNTIME: tuple[str, str, Any] | None = None


def _runtime() -> tuple[str, str, Any]:
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = _import_runtime()
    return _RUNTIME


def runtime_name() -> str:
    """Import name of the runtime in use: 'ai_edge_litert' or 'tflite_runtime'."""
    return _runtime()[0]


def runtime_version() -> str:
    """Version string of the runtime in use."""
    return _runtime()[1]


@dataclass(frozen=True)
class RuntimeSettings:
    """Interpreter settings that change numerics or speed; equal settings, equal bits."""

    threads: int = 1
    xnnpack: bool = True

    def label(self) -> str:
        return f"{runtime_name()}/{'xnnpack' if self.xnnpack else 'builtin'}/t{self.threads}"


def make_interpreter(model: bytes | str, settings: RuntimeSettings = RuntimeSettings()) -> Any:
    """Build (not yet allocated) interpreter from .tflite bytes or a file path."""
    _, _, mod = _runtime()
    kwargs: dict[str, Any] = {"num_threads": settings.threads}
    if isinstance(model, (bytes, bytearray, memoryview)):
        kwargs["model_content"] = bytes(model)
    else:
        kwargs["model_path"] = str(model)
    if not settings.xnnpack:
        kwargs["experimental_op_resolver_type"] = (
            mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    interp = mod.Interpreter(**kwargs)
    global _BANNER_DONE
    if settings.xnnpack and not _BANNER_DONE:
        _BANNER_DONE = True
        _allocate_quietly(interp)
    return interp


# The runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate" on fd 2 at the
# first allocation in a process. Commands promise ONE line on stderr for bad input, so
# the first allocation runs with fd 2 pointed at /dev/null; later ones print nothing.
_BANNER_DONE = False


def _allocate_quietly(interp: Any) -> None:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        try:
            interp.allocate_tensors()
        except Exception:
            pass  # the caller's own allocate_tensors() reports the real error
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run_whole(
    model: bytes | str, inputs: list, settings: RuntimeSettings = RuntimeSettings()
) -> list:
    """Run a model once on `inputs` (graph input order); return outputs in graph order."""
    interp = make_interpreter(model, settings)
    interp.allocate_tensors()
    for det, arr in zip(interp.get_input_details(), inputs, strict=True):
        interp.set_tensor(det["index"], arr)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]
