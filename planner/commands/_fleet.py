"""Helpers shared by the fleet commands: broker options, connecting, .npy files, tables."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import FleetError
from planner.fleet import Fleet


def add_broker(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--broker", required=required, help="mqtt://host:port")
    p.add_argument("--fleet", default="default", help="fleet name (topic prefix)")


def connect(args: argparse.Namespace) -> Fleet:
    return Fleet.connect(args.broker, fleet=args.fleet)


def load_npy(path: str) -> np.ndarray:
    """Read one .npy file; FleetError (exit 2) if it cannot."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FleetError(f"{path}: cannot read a .npy array ({exc})") from None


def file_name(tensor: str) -> str:
    """A tensor name as a file name ('head/softmax' -> 'head_softmax.npy')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tensor).strip("_") + ".npy"


def save_outputs(outputs: dict[str, np.ndarray], target: str) -> list[str]:
    """-o Y.npy: the one output in that file; -o DIR: one NAME.npy per output in DIR."""
    t = Path(target)
    if t.suffix == ".npy" and not t.is_dir():
        if len(outputs) != 1:
            raise FleetError(f"-o {target}: the deployment has {len(outputs)} outputs "
                             f"({', '.join(outputs)}); give a directory")
        np.save(t, next(iter(outputs.values())))
        return [str(t)]
    t.mkdir(parents=True, exist_ok=True)
    written = []
    for name, arr in outputs.items():
        np.save(t / file_name(name), arr)
        written.append(str(t / file_name(name)))
    return written


def plan_rows(record: dict[str, Any]) -> list[list[object]]:
    """Table rows (stage, ops, node, tile) of a deployment record."""
    rows = []
    for sid, st in record["stages"].items():
        tile = st.get("tile")
        rows.append([sid, f"[{st['ops'][0]}, {st['ops'][1]})", st["node"],
                     "" if not tile else "out " + ",".join(map(str, tile["output_region"]))])
    return rows


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.2f} ms"
