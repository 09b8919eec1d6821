"""Errors the planner reports to users; the CLI turns each into one line and exit code 2."""


class TilefleetError(Exception):
    """Bad input or an impossible request: the message names the file, key, op or node."""


class ModelError(TilefleetError):
    """A .tflite file that cannot be read (truncated, not a flatbuffer, wrong identifier)."""


class CutError(TilefleetError):
    """A cut that cannot be made (cut point out of range, unknown tensor, control flow)."""


class TileError(TilefleetError):
    """A tile layout that cannot be made (untileable op, bad grid, region out of range)."""


class ProfileError(TilefleetError):
    """A profile that is missing, malformed or does not match the model."""


class PlanError(TilefleetError):
    """A plan that cannot be made or read (memory does not fit, unknown node, bad file)."""


class FleetError(TilefleetError):
    """A problem talking to the fleet: broker unreachable, unknown node or deployment."""
