"""Writing outputs safely: every artifact goes to a temporary file beside its
destination and is renamed into place only when complete, so a failure never
leaves a half-written file behind. A destination that is a symlink is written
through (its target is replaced, the link stays), and one that is not a
regular file (a device, a FIFO, /dev/stdout, a process substitution) is
written to directly: renaming over it would replace the device itself."""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_output(path: os.PathLike | str, mode: int = 0o600) -> Iterator[IO[bytes]]:
    """Yield a binary file object; on success it replaces ``path`` with ``mode``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(os.path.realpath(path))
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


class TooLarge(ValueError):
    """A file that should be small is not (e.g. /dev/zero given as a key)."""


def read_small(path: os.PathLike | str, limit: int = 256 * 1024) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them: a key, a certificate or
    a secrets file is kilobytes, and a device such as /dev/zero never ends."""
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{path} is larger than {limit // 1024} KiB, which no key or certificate is")
    return data


def is_special(path: os.PathLike | str) -> bool:
    """True for an existing destination that is neither a regular file nor a folder."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


def atomic_write(path: os.PathLike | str, data: bytes | str, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with permissions ``mode`` (or
    straight into it when it is a special file)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if is_special(path):
        with open(path, "wb") as fh:
            fh.write(data)
        return
    with atomic_output(path, mode) as fh:
        fh.write(data)


def write_output(path: os.PathLike | str | None, data: bytes, *, never_over=None) -> str:
    """Every command's one way to write an artifact: to stdout when ``path``
    is None, else atomically with mode 0600 (or straight into a special
    file). ``never_over`` is the config: an output never replaces it.
    Returns what was written, for the command to say."""
    import sys

    if path is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return ""
    if never_over is not None and os.path.exists(path) and os.path.exists(never_over) \
            and os.path.samefile(path, never_over):
        from .errors import UsageError

        raise UsageError(f"-o {path} is the config itself: write the output somewhere else")
    atomic_write(path, data, mode=0o600)
    return f"wrote {path} ({len(data)} bytes{'' if is_special(path) else ', mode 0600'})"
