"""Errors raised by the node agent; each carries a one-line message for the user."""

from __future__ import annotations

from typing import Any

from node.wire.codes import Code


class NodeError(Exception):
    """Base class: a problem the agent reports and survives."""

    code = Code.ERROR

    def __init__(self, message: str, *, code: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details or {}


class WireError(NodeError):
    """A malformed, oversized or inconsistent message on the data or control plane.

    Carries what could be read of the message (reply endpoint or topic, request id,
    deployment) so the receiver can still send an error reply.
    """

    code = Code.BAD_MESSAGE

    def __init__(self, message: str, *, code: str | None = None, reply: str | None = None,
                 request: str | None = None, deployment: str | None = None) -> None:
        super().__init__(message, code=code)
        self.reply = reply
        self.request = request
        self.deployment = deployment


class RuntimeUnavailable(NodeError):
    """No TFLite runtime could be imported."""

    code = Code.NO_RUNTIME


class StoreError(NodeError):
    """A sub-model that is missing, corrupted or does not match its sha256."""

    code = Code.STORE


class ConfigError(NodeError):
    """A board file or command-line setting that is missing or invalid."""

    code = Code.CONFIG


class DeployError(NodeError):
    """A deployment, epoch or stage that is unknown or cannot be loaded."""

    code = Code.DEPLOY

