"""Small helpers shared by command modules: JSON output and table printing."""

from __future__ import annotations

import json
import sys


def print_json(doc: object) -> None:
    """Print exactly one JSON document on stdout."""
    json.dump(doc, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """Print an aligned plain-text table on stdout."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, r in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if c.replace(".", "").isdigit() else c.ljust(w)
                for c, w in zip(r, widths, strict=True)
            ).rstrip()
        )
        if k == 0:
            print("  ".join("-" * w for w in widths))


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
