"""Content-addressed sub-model store: `<state-dir>/parts/<sha256>.tflite`, verified on write.

Uploads arrive in chunks (see node/wire/service.py); a part is renamed into place only
after its sha256 matched, so whatever sits in the store survives restarts and needs no
new transfer.

Limits (board file `max_part_mb`, `store_limit_mb`): an upload declaring more than the
part limit, or more than the store has room for (stored parts plus the sizes declared by
uploads in progress), or beyond `MAX_UPLOADS` in progress, is refused at its first
chunk; an upload idle for `UPLOAD_IDLE_S` gives its room back when another starts.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import StoreError
from node.wire.codes import Code

log = logging.getLogger(__name__)
_SHA = re.compile(r"^[0-9a-f]{64}$")
UPLOAD_IDLE_S = 60.0
MAX_UPLOADS = 16  # uploads in progress at once (each holds a file and a hash state)


def sha256_of(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Upload:
    size: int
    offset: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    touched: float = field(default_factory=time.monotonic)


class Store:
    """Parts by sha256; thread-safe; partial uploads live in `tmp/` until verified."""

    def __init__(self, state_dir: str | Path, max_part_bytes: int = 512 << 20,
                 limit_bytes: int = 4 << 30) -> None:
        self.root = Path(state_dir) / "parts"
        self.tmp = Path(state_dir) / "tmp"
        self.max_part_bytes, self.limit_bytes = max_part_bytes, limit_bytes
        self._lock = threading.Lock()
        self._uploads: dict[str, _Upload] = {}
        self._stored: int | None = None  # bytes of the stored parts, counted once

    def open(self) -> list[str]:
        """Create the directories, drop stale partial uploads; return the stored shas."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for p in self.tmp.iterdir():
            p.unlink(missing_ok=True)
        return self.list()

    def list(self) -> list[str]:
        """Sha256 digests of every stored part."""
        return sorted(p.stem for p in self.root.glob("*.tflite") if _SHA.match(p.stem))

    def stored_bytes(self) -> int:
        """Bytes of every stored part."""
        if self._stored is None:
            self._stored = sum(p.stat().st_size for p in self.root.glob("*.tflite"))
        return self._stored

    def has(self, sha: str) -> bool:
        return bool(_SHA.match(sha)) and (self.root / f"{sha}.tflite").is_file()

    def path(self, sha: str) -> Path:
        """Path of a stored part; StoreError if it is not there."""
        if not self.has(sha):
            raise StoreError(f"part {sha[:12]} is not in the store {self.root}",
                             code=Code.MISSING_PART)
        return self.root / f"{sha}.tflite"

    def read_verified(self, sha: str) -> bytes:
        """Bytes of a stored part, re-hashed; a corrupted file is removed."""
        data = self.path(sha).read_bytes()
        if sha256_of(data) != sha:
            self.remove(sha)
            raise StoreError(f"part {sha[:12]} in the store is corrupted; removed it",
                             code=Code.SHA256_MISMATCH)
        return data

    def put(self, sha: str, data: bytes) -> None:
        """Store a whole part at once."""
        self.write_chunk(sha, len(data), 0, data, last=True)

    def write_chunk(self, sha: str, size: int, offset: int, chunk: bytes | memoryview,
                    last: bool) -> int:
        """Append one chunk of an upload; returns the next expected offset.

        Offset 0 (re)starts an upload. A chunk at another offset than expected raises
        StoreError (code out_of_order) so the sender can resume from `expected`.
        """
        if not _SHA.match(sha):
            raise StoreError(f"upload: {sha!r} is not a sha256 digest", code=Code.BAD_UPLOAD)
        if not 0 <= size <= self.max_part_bytes:
            raise StoreError(f"upload {sha[:12]}: size {size} outside 0..{self.max_part_bytes} "
                             "(max_part_mb)", code=Code.OVERSIZED)
        tmp = self.tmp / f"{sha}.part"
        with self._lock:
            up = self._uploads.get(sha)
            if offset == 0:
                self._make_room(sha, size)
                up = self._uploads[sha] = _Upload(size)
                tmp.write_bytes(b"")
            if up is None or up.offset != offset or up.size != size:
                want = up.offset if up else 0
                raise StoreError(f"upload {sha[:12]}: chunk at {offset}, expected {want}",
                                 code=Code.OUT_OF_ORDER, details={"expected": want})
            if offset + len(chunk) > size:
                del self._uploads[sha]
                raise StoreError(f"upload {sha[:12]}: more than the announced {size} bytes",
                                 code=Code.BAD_UPLOAD)
            with open(tmp, "ab") as f:
                f.write(chunk)
            up.digest.update(chunk)
            up.offset += len(chunk)
            up.touched = time.monotonic()
            if not last:
                return up.offset
            del self._uploads[sha]
            if up.offset != size or up.digest.hexdigest() != sha:
                tmp.unlink(missing_ok=True)
                raise StoreError(f"upload {sha[:12]}: sha256 mismatch "
                                 f"(got {up.digest.hexdigest()[:12]}, {up.offset} bytes)",
                                 code=Code.SHA256_MISMATCH)
            had = self.has(sha)
            os.replace(tmp, self.root / f"{sha}.tflite")
            if self._stored is not None and not had:
                self._stored += size
            log.info("stored part %s (%d bytes)", sha[:12], size)
            return up.offset

    def _make_room(self, sha: str, size: int) -> None:
        """StoreError (store_full) unless `size` more bytes fit (lock held)."""
        now = time.monotonic()
        for key in [k for k, u in self._uploads.items()
                    if k == sha or now - u.touched > UPLOAD_IDLE_S]:
            del self._uploads[key]  # restarted, or abandoned: its room is free again
            (self.tmp / f"{key}.part").unlink(missing_ok=True)
        if len(self._uploads) >= MAX_UPLOADS:
            raise StoreError(f"upload {sha[:12]}: {len(self._uploads)} uploads already in "
                             "progress", code=Code.STORE_FULL)
        held = self.stored_bytes() + sum(u.size for u in self._uploads.values())
        if not self.has(sha) and held + size > self.limit_bytes:
            raise StoreError(f"upload {sha[:12]}: {size} bytes do not fit in the store "
                             f"({held} of {self.limit_bytes} bytes held, store_limit_mb)",
                             code=Code.STORE_FULL)

    def remove(self, sha: str) -> None:
        p = self.root / f"{sha}.tflite"
        try:
            n = p.stat().st_size
            p.unlink()
        except OSError:
            return
        with self._lock:
            if self._stored is not None:
                self._stored -= n
