"""Errors raised by the node agent; each carries a one-line message for the user."""


class NodeError(Exception):
    """Base class: a problem the agent reports and survives."""


class WireError(NodeError):
    """A malformed, oversized or inconsistent message on the data or control plane."""


class RuntimeUnavailable(NodeError):
    """No TFLite runtime could be imported."""


class StoreError(NodeError):
    """A sub-model that is missing, corrupted or does not match its sha256."""


class ConfigError(NodeError):
    """A board file or command-line setting that is missing or invalid."""
