"""Service requests on the ROUTER socket: part uploads, have?, bandwidth probe, ping."""

from __future__ import annotations

import logging
import time
from typing import Any

import zmq

from node.errors import NodeError
from node.metrics import Counters
from node.store import Store
from node.wire.codes import Code
from node.wire.service import parse_request, reply_frames

log = logging.getLogger(__name__)


class ServiceHandler:
    """Callable turning one request (frames after the identity) into reply frames."""

    def __init__(self, store: Store, counters: Counters) -> None:
        self.store, self.counters = store, counters

    def __call__(self, frames: list[zmq.Frame]) -> list[Any]:
        req: dict[str, Any] | None = None
        try:
            req, payload = parse_request(frames)
            return getattr(self, "_" + req["op"])(req, payload)
        except NodeError as exc:
            self.counters.error(exc.code)
            return reply_frames(req, False, error=str(exc), code=exc.code, **exc.details)
        except (KeyError, TypeError, ValueError) as exc:
            self.counters.error(Code.BAD_REQUEST)
            return reply_frames(req, False, error=f"bad service request: {exc}",
                                code=Code.BAD_REQUEST)

    def _ping(self, req: dict[str, Any], payload: list[Any]) -> list[Any]:
        return reply_frames(req, True, time=time.time())

    def _have(self, req: dict[str, Any], payload: list[Any]) -> list[Any]:
        parts = [p for p in req["parts"] if isinstance(p, str)]
        have = [p for p in parts if self.store.has(p)]
        return reply_frames(req, True, have=have, missing=[p for p in parts if p not in have])

    def _put(self, req: dict[str, Any], payload: list[Any]) -> list[Any]:
        if len(payload) != 1:
            raise NodeError(f"put needs exactly one chunk frame, got {len(payload)}",
                            code=Code.BAD_FRAME)
        size, offset, last = req["size"], req["offset"], req["last"]
        if type(size) is not int or type(offset) is not int or type(last) is not bool:
            raise TypeError("size/offset must be integers and last a boolean")
        nxt = self.store.write_chunk(str(req["sha256"]), size, offset, payload[0].buffer, last)
        return reply_frames(req, True, next=nxt)

    def _probe(self, req: dict[str, Any], payload: list[Any]) -> list[Any]:
        n = sum(len(f) for f in payload)
        rep = reply_frames(req, True, received=n)
        return rep + list(payload) if req.get("echo") else rep
