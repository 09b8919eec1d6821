"""Read a JSON document from a file with one-line errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

from planner.errors import TilefleetError


def read_json(path: Path, what: str, error: type[TilefleetError]) -> object:
    """Parsed JSON of `path`; unreadable or invalid files raise `error` naming `what`."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
