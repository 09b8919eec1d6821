"""A running deployment as the caller sees it: `infer`, `infer_many`, `close`.

It follows the retained deployment record, so when the planner moves the deployment
to a new epoch, new requests and retries go to the new epoch's first stages while
results of either epoch are accepted (each request is delivered once).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.errors import FleetError
from planner.fleet.dataclient import DataClient, Entry, local_address_towards
from planner.fleet.record import Record
from planner.fleet.requests import Tracker, describe_src
from planner.fleet.resend import resend_in_flight

if TYPE_CHECKING:
    from planner.fleet.nodes import FleetAccess as Fleet

log = logging.getLogger(__name__)
Inputs = dict[str, np.ndarray] | list[np.ndarray] | tuple[np.ndarray, ...] | np.ndarray


class Deployment:
    """Client handle of one deployment; thread-safe `submit`, ordered `infer_many`."""

    def __init__(self, fleet: Fleet, record: Record, timeout_s: float = 10.0,
                 retries: int = 2, window: int = 8) -> None:
        self.fleet, self.name, self.window = fleet, record.name, window
        self._lock = threading.Lock()
        self.record = record
        self.tracker = Tracker(timeout_s=timeout_s, retries=retries, where=self._where)
        self.tracker.set_results(record.epoch, record.results)
        self._entry = Entry(record.name, record.epoch, record.entry_routes())
        self._data: DataClient | None = None
        self._closed = False
        fleet.control.record_listeners.append(self._on_record)

    # ---- epochs -------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self._entry.epoch

    def _on_record(self, name: str, doc: dict[str, Any] | None) -> None:
        if name != self.name or doc is None:
            return
        try:
            rec = Record.from_json(doc)
        except FleetError as exc:
            log.warning("ignoring deployment record update: %s", exc)
            return
        self.switch(rec)

    def switch(self, rec: Record) -> None:
        """Send new requests and retries to `rec`'s epoch (ignored if not newer)."""
        with self._lock:
            if rec.epoch <= self._entry.epoch:
                return
            self.tracker.set_results(rec.epoch, rec.results)
            self.record = rec
            self._entry = Entry(rec.name, rec.epoch, rec.entry_routes())
        log.info("deployment %s: now on epoch %d", rec.name, rec.epoch)
        if self._data is not None:  # in-flight requests of the old epoch go again, now
            resend_in_flight(self.tracker, self._data._lock)

    def _where(self, src: str) -> str:
        return describe_src(src, lambda node: sorted(
            sid for sid, st in self.record.stages.items() if st.node == node))

    def _current(self) -> Entry:
        return self._entry

    # ---- inputs -------------------------------------------------------------------
    def prepare(self, x: Inputs) -> dict[str, np.ndarray]:
        """Inputs by name, checked against the model's shapes and dtypes (FleetError)."""
        specs = self.record.model["inputs"]
        names = [t["name"] for t in specs]
        if isinstance(x, dict):
            if set(x) != set(names):
                raise FleetError(f"inputs {sorted(x)} do not match the model's inputs {names}")
            given = x
        elif isinstance(x, np.ndarray) and len(names) == 1:
            given = {names[0]: x}
        elif isinstance(x, (list, tuple)) and len(x) == len(names):
            given = dict(zip(names, x, strict=True))
        else:
            raise FleetError(f"expected {len(names)} input(s) {names} as a dict or list")
        out = {}
        for t in specs:
            a = given[t["name"]]
            if not isinstance(a, np.ndarray):
                raise FleetError(f"input {t['name']!r}: expected a numpy array, got "
                                 f"{type(a).__name__}")
            if a.dtype.name != t["dtype"] or list(a.shape) != list(t["shape"]):
                raise FleetError(f"input {t['name']!r}: expected {t['dtype']}{list(t['shape'])}, "
                                 f"got {a.dtype.name}{list(a.shape)}")
            out[t["name"]] = np.ascontiguousarray(a)
        return out

    # ---- requests -----------------------------------------------------------------
    def _client(self) -> DataClient:
        if self._closed:
            raise FleetError(f"deployment {self.name!r}: client is closed")
        if self._data is None:
            first = self._entry.routes[0].to if self._entry.routes else "tcp://127.0.0.1:1"
            self._data = DataClient(self._current, local_address_towards(first), self.tracker)
        return self._data

    def submit(self, x: Inputs) -> Future[dict[str, np.ndarray]]:
        """Send one frame; the future resolves to {output name: array} or raises."""
        return self._client().submit(self.prepare(x))

    def infer(self, x: Inputs, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run one frame through the fleet and return its outputs by name."""
        return self.submit(x).result(timeout=timeout)

    def infer_many(self, frames: Iterable[Inputs], window: int | None = None,
                   return_errors: bool = False) -> Iterator[dict[str, np.ndarray] | Exception]:
        """Pipelined inference, results in input order, at most `window` in flight.

        A failed frame raises its error, or is yielded as the exception object when
        `return_errors` is set (so a stream continues past it).
        """
        window = max(1, window or self.window)
        inflight: collections.deque[Future[dict[str, np.ndarray]]] = collections.deque()
        for x in frames:
            inflight.append(self.submit(x))
            if len(inflight) >= window:
                yield self._take(inflight.popleft(), return_errors)
        while inflight:
            yield self._take(inflight.popleft(), return_errors)

    @staticmethod
    def _take(fut: Future[dict[str, np.ndarray]], return_errors: bool
              ) -> dict[str, np.ndarray] | Exception:
        try:
            return fut.result()
        except FleetError as exc:
            if return_errors:
                return exc
            raise

    def stats(self) -> dict[str, Any]:
        """Client-side counters: sent, retries, delivered, failed, duplicates, errors."""
        return self._data.stats() if self._data else {"sent": 0, "delivered": 0}

    def close(self) -> None:
        """Stop the client side (pending requests fail); the deployment keeps running."""
        if self._closed:
            return
        self._closed = True
        if self._on_record in self.fleet.control.record_listeners:
            self.fleet.control.record_listeners.remove(self._on_record)
        if self._data is not None:
            self._data.close()

    def undeploy(self) -> None:
        """Close the client and free the deployment on every node."""
        self.close()
        self.fleet.undeploy(self.name)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
