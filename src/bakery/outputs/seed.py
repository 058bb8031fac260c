"""NoCloud seed ISO: the small CD that hands user-data, meta-data and (optionally)
network-config to cloud-init on a machine with no metadata service (QEMU, VirtualBox,
Proxmox, Vagrant).

Owns the ISO layout and its determinism. The layout is the one `cloud-localds`
produces with genisoimage (`-volid cidata -joliet -rock`): ISO 9660 level 1 with
8.3 names (`USER_DAT.;1`), plus Joliet and Rock Ridge carrying the real names that
cloud-init reads. Built with pycdlib, so no external tool is needed at run time.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Mapping

import yaml

from bakery.errors import UsageError
from bakery.fsutil import atomic_write

VOLUME_LABEL = "cidata"

# Used when SOURCE_DATE_EPOCH is not set: any constant works, cloud-init ignores
# the dates; a fixed one makes the same inputs give the same bytes.
DEFAULT_EPOCH = 946684800  # 2000-01-01T00:00:00Z

# Joliet allows 64 UCS-2 characters per name; NoCloud only uses flat, simple names.
_SEED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SeedError(UsageError):
    """The seed cannot be built from the inputs given (exit 2)."""


def meta_data(instance_id: str, hostname: str) -> bytes:
    """NoCloud meta-data: the instance id (a new one makes cloud-init run the
    per-instance modules again) and the hostname."""
    for key, value in (("instance-id", instance_id), ("local-hostname", hostname)):
        if not isinstance(value, str) or not value.strip():
            raise SeedError(f"meta-data {key} must be a non-empty string")
    text = yaml.safe_dump(
        {"instance-id": instance_id, "local-hostname": hostname},
        sort_keys=False,
        default_flow_style=False,
    )
    return text.encode("utf-8")


def iso9660_name(name: str) -> str:
    """The level-1 ISO 9660 name genisoimage gives `name` (`user-data` ->
    `USER_DAT.;1`). Only systems without Joliet/Rock Ridge see it."""
    stem, _, ext = name.upper().partition(".")
    stem = re.sub(r"[^A-Z0-9_]", "_", stem)[:8]
    ext = re.sub(r"[^A-Z0-9_]", "_", ext.replace(".", "_"))[:3]
    return f"{stem}.{ext};1"


def build_seed_iso(files: Mapping[str, bytes], *, epoch: int | None = None) -> bytes:
    """Return the bytes of a `cidata` seed ISO holding ``files`` (name -> content).

    Every timestamp in the image is ``epoch`` (default: ``SOURCE_DATE_EPOCH``,
    else a fixed instant), in UTC, so the result depends only on the inputs.
    """
    import pycdlib  # imported here so the rest of bakery works without it

    if not files:
        raise SeedError("a seed ISO needs at least user-data and meta-data")
    short_names: dict[str, str] = {}
    for name, content in files.items():
        if not _SEED_NAME.match(name):
            raise SeedError(f"invalid seed file name {name!r}")
        if not isinstance(content, (bytes, bytearray)):
            raise SeedError(f"content of {name} must be bytes")
        short = iso9660_name(name)
        if short in short_names:
            raise SeedError(f"{name} and {short_names[short]} share the ISO 9660 name {short}")
        short_names[short] = name

    stamp = _resolve_epoch(epoch)
    with _pinned_clock(pycdlib, stamp):
        iso = pycdlib.PyCdlib()
        iso.new(
            interchange_level=1,
            vol_ident=VOLUME_LABEL,
            sys_ident="LINUX",
            joliet=3,
            rock_ridge="1.09",
        )
        for short, name in sorted(short_names.items()):
            content = bytes(files[name])
            iso.add_fp(
                io.BytesIO(content),
                len(content),
                iso_path="/" + short,
                rr_name=name,
                joliet_path="/" + name,
            )
        out = io.BytesIO()
        iso.write_fp(out)
        iso.close()
    return out.getvalue()


def write_seed_iso(path: os.PathLike | str, files: Mapping[str, bytes], *, epoch: int | None = None) -> Path:
    """Build the seed and write it atomically, mode 0600 (user-data holds secrets)."""
    data = build_seed_iso(files, epoch=epoch)
    atomic_write(path, data, mode=0o600)
    return Path(path)


def _resolve_epoch(epoch: int | None) -> int:
    if epoch is not None:
        return int(epoch)
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return DEFAULT_EPOCH
    try:
        value = int(raw)
    except ValueError:
        raise SeedError(f"SOURCE_DATE_EPOCH must be an integer, not {raw!r}") from None
    if value < 0:
        raise SeedError("SOURCE_DATE_EPOCH must not be negative")
    return value


class _FixedClock:
    """Stands in for the ``time`` module inside pycdlib.

    pycdlib stamps volume descriptors, directory records and Rock Ridge entries
    with ``time.time()`` rendered through ``time.localtime()`` and offers no way
    to choose the date; the volume modification date is even taken while writing.
    Replacing the clock pycdlib sees is the one place that covers all of them, and
    answering ``localtime`` with UTC keeps the bytes independent of the TZ setting.
    """

    def __init__(self, epoch: int) -> None:
        self._epoch = float(epoch)

    def time(self) -> float:
        return self._epoch

    def localtime(self, secs: float | None = None) -> time.struct_time:
        return time.gmtime(self._epoch if secs is None else secs)

    def __getattr__(self, name: str):
        return getattr(time, name)


_clock_lock = threading.Lock()


class _pinned_clock:
    """Context manager: pycdlib's modules see a fixed clock, restored on exit."""

    def __init__(self, package: ModuleType, epoch: int) -> None:
        self._package = package
        self._clock = _FixedClock(epoch)
        self._saved: list[tuple[ModuleType, object]] = []

    def _modules(self) -> list[ModuleType]:
        import sys

        prefix = self._package.__name__ + "."
        return [
            mod
            for name, mod in list(sys.modules.items())
            if (name == self._package.__name__ or name.startswith(prefix))
            and getattr(mod, "time", None) is time
        ]

    def __enter__(self) -> None:
        _clock_lock.acquire()
        try:
            for mod in self._modules():
                self._saved.append((mod, mod.time))
                mod.time = self._clock
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        try:
            for mod, original in reversed(self._saved):
                mod.time = original
            self._saved.clear()
        finally:
            _clock_lock.release()
