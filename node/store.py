"""Content-addressed sub-model store: `<state-dir>/parts/<sha256>.tflite`, verified on write.

Uploads arrive in chunks (see node/wire/service.py); a part is renamed into place only
after its sha256 matched, so whatever sits in the store survives restarts and needs no
new transfer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import StoreError
from node.wire.codes import Code

log = logging.getLogger(__name__)
_SHA = re.compile(r"^[0-9a-f]{64}$")


def sha256_of(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Upload:
    size: int
    offset: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


class Store:
    """Parts by sha256; thread-safe; partial uploads live in `tmp/` until verified."""

    def __init__(self, state_dir: str | Path, max_part_bytes: int = 1 << 31) -> None:
        self.root = Path(state_dir) / "parts"
        self.tmp = Path(state_dir) / "tmp"
        self.max_part_bytes = max_part_bytes
        self._lock = threading.Lock()
        self._uploads: dict[str, _Upload] = {}

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
            (self.root / f"{sha}.tflite").unlink(missing_ok=True)
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
            raise StoreError(f"upload {sha[:12]}: size {size} outside 0..{self.max_part_bytes}",
                             code=Code.OVERSIZED)
        tmp = self.tmp / f"{sha}.part"
        with self._lock:
            up = self._uploads.get(sha)
            if offset == 0:
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
            if not last:
                return up.offset
            del self._uploads[sha]
            if up.offset != size or up.digest.hexdigest() != sha:
                tmp.unlink(missing_ok=True)
                raise StoreError(f"upload {sha[:12]}: sha256 mismatch "
                                 f"(got {up.digest.hexdigest()[:12]}, {up.offset} bytes)",
                                 code=Code.SHA256_MISMATCH)
            os.replace(tmp, self.root / f"{sha}.tflite")
            log.info("stored part %s (%d bytes)", sha[:12], size)
            return up.offset

    def remove(self, sha: str) -> None:
        (self.root / f"{sha}.tflite").unlink(missing_ok=True)
