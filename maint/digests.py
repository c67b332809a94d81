"""Checksums of a stream, computed as it passes: sha256 (hex), crc32c and md5 (base64, as GCS
reports them). Pure computation, shared by the backup (what was written) and the verification
(what was read back), so both sides of a comparison are computed the same way."""

from __future__ import annotations

import base64
import hashlib

import google_crc32c


def crc32c_base64(value: int) -> str:
    """The big-endian CRC32C in base64: the form GCS object metadata uses."""
    return base64.b64encode(value.to_bytes(4, "big")).decode()


class Digests:
    """Only the digests asked for are computed: each costs CPU time on every byte."""

    def __init__(self, *, sha256: bool = True, crc32c: bool = True, md5: bool = False):
        self._sha256 = hashlib.sha256() if sha256 else None
        self._crc32c = google_crc32c.Checksum() if crc32c else None
        self._md5 = hashlib.md5() if md5 else None
        self.size_bytes = 0

    def update(self, chunk: bytes) -> None:
        if self._sha256:
            self._sha256.update(chunk)
        if self._crc32c:
            self._crc32c.update(chunk)
        if self._md5:
            self._md5.update(chunk)
        self.size_bytes += len(chunk)

    @property
    def sha256(self) -> str | None:
        return self._sha256.hexdigest() if self._sha256 else None

    @property
    def crc32c(self) -> str | None:
        return crc32c_base64(int.from_bytes(self._crc32c.digest(), "big")) if self._crc32c else None

    @property
    def md5(self) -> str | None:
        return base64.b64encode(self._md5.digest()).decode() if self._md5 else None
