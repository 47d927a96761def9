"""sha256 digests of weight files, and their verification."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ChecksumError

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> str:
    """Return the digest of ``path``; raise ChecksumError naming the file if it is not ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{path}: sha256 mismatch (expected {expected.lower()}, got {actual}); "
            "the file is corrupt or not the one its card describes, so it was not loaded"
        )
    return actual
