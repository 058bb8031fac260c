"""Writing outputs safely: every artifact goes to a temporary file beside its
destination and is renamed into place only when complete, so a failure never
leaves a half-written file behind."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_output(path: os.PathLike | str, mode: int = 0o600) -> Iterator[IO[bytes]]:
    """Yield a binary file object; on success it replaces ``path`` with ``mode``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: os.PathLike | str, data: bytes | str, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with permissions ``mode``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_output(path, mode) as fh:
        fh.write(data)
