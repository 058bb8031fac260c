"""Raspberry Pi SD-card images: writing first-boot files onto the boot partition.

This module owns the three ways of baking (a copy of an image, an image in
place, a card already flashed and mounted), recognising which kind of image
it is from its boot partition, editing ``cmdline.txt``, and copying images
(sparse, or decompressing ``.img.xz`` on the fly). What the files contain is
decided by the renderer, through the ``files_for`` and ``cmdline_edit``
callbacks; nothing here knows about bakery.yaml.

No root, no loop devices, no mounts: the FAT partition is found from the
partition table (`bakery.outputs.partitions`) and written with mtools at its
byte offset. mtools was chosen over pure-Python FAT libraries on evidence:
pyfatfs 1.1.0 left the FAT32 free-cluster count stale (fsck complains),
matched names case-sensitively (``CMDLINE.TXT`` next to ``cmdline.txt``) and
needs ``fs``, which imports the removed ``pkg_resources``; FATtools corrupted
images. mtools writes long names, matches names as FAT does (ignoring case),
and leaves ``fsck.vfat -n`` clean. See docs/sd-image.md.

What each image kind carries on its boot partition, and so how it is told
apart (sources in docs/sd-image.md):

* Ubuntu Server for Raspberry Pi: FAT label ``system-boot``, a ``README``
  that names Ubuntu, ``cmdline.txt`` with ``root=LABEL=writable``, and stock
  ``user-data``/``meta-data``/``network-config`` read by cloud-init NoCloud.
* Raspberry Pi OS with cloud-init (Trixie releases after 2025-10-01): label
  ``bootfs``, ``root=PARTUUID=…``, and stock ``user-data``, ``meta-data``
  (``instance_id: rpios-image``) and ``network-config`` installed by pi-gen's
  ``stage2/04-cloud-init``; cloud-init is configured with
  ``seedfrom: file:///boot/firmware``.
* Raspberry Pi OS without cloud-init (Bookworm, the first Trixie release of
  2025-10-01): label ``bootfs`` and none of those three files; the Imager
  customises them with ``firstrun.sh`` started by ``systemd.run=`` in
  ``cmdline.txt``.
"""

from __future__ import annotations

import enum
import errno
import lzma
import os
import shutil
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Mapping, Optional, Protocol, Sequence

from bakery.errors import BakeryError
from bakery.outputs.partitions import BootPartition, PartitionError, find_boot_partition

__all__ = [
    "BakeReport",
    "BootFS",
    "BootKind",
    "DirectoryBootFS",
    "ImageBootFS",
    "ImageError",
    "bake_boot_dir",
    "bake_image",
    "detect_boot_kind",
    "firstrun_params",
    "nocloud_param",
    "set_cmdline_params",
]

REQUIRED_BOOT_FILES = ("cmdline.txt", "config.txt")
CLOUD_INIT_SEED_FILES = ("user-data", "meta-data", "network-config")
CHUNK = 4 * 1024 * 1024
_ZERO_CHUNK = bytes(CHUNK)
# Characters FAT long names cannot hold, besides the path separators.
_FAT_FORBIDDEN = set('"*:<>?|\\/') | {chr(c) for c in range(32)}


class ImageError(BakeryError):
    """Baking is impossible; the message says what is wrong and what to do.

    A refusal of what was given (wrong file, same input and output, a device)
    exits 2 like any usage error; a failure while working (mtools, disk full)
    is raised with ``exit_code=1``.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BootKind(enum.Enum):
    RPIOS_CLOUD_INIT = "Raspberry Pi OS with cloud-init"
    UBUNTU_PI = "Ubuntu Server for Raspberry Pi"
    RPIOS_FIRSTRUN = "Raspberry Pi OS without cloud-init (Bookworm or the first Trixie release)"

    @property
    def has_cloud_init(self) -> bool:
        return self is not BootKind.RPIOS_FIRSTRUN


FilesFor = Callable[[BootKind], Mapping[str, bytes]]
CmdlineEdit = Callable[[str, BootKind], str]
# progress(label, total bytes) -> a context whose value takes each count copied.
Progress = Callable[[str, int], ContextManager[Callable[[int], None]]]


class BootFS(Protocol):
    """The root directory of a boot partition: an image's FAT or a mounted card."""

    label: str | None  # FAT volume label when known (images), else None

    def names(self) -> list[str]:
        """Names of the regular files in the root directory, as stored."""

    def read(self, name: str) -> bytes | None:
        """Contents of root file ``name`` (case-insensitive), or None if absent."""

    def write(self, files: Mapping[str, bytes]) -> None:
        """Create or replace root files; every name must be the one to store."""


@dataclass
class BakeReport:
    kind: BootKind
    reason: str                      # why this kind: what the boot partition holds
    written: list[str]               # names as stored on the boot partition
    cmdline_before: str
    cmdline_after: str
    image: Path | None = None        # the baked image file (None for a boot dir)
    boot_dir: Path | None = None
    partition: BootPartition | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        where = self.image if self.image is not None else self.boot_dir
        lines = [f"{where}: {self.kind.value} ({self.reason})"]
        if self.partition is not None:
            part, fat = self.partition.partition, self.partition.fat
            lines.append(
                f"  boot partition {part.number}: {fat.fat_type} '{fat.label or ''}' "
                f"at byte {part.start}, {part.size // (1024 * 1024)} MiB"
            )
        lines.append(f"  wrote {', '.join(self.written)}")
        if self.cmdline_after != self.cmdline_before:
            lines.append(f"  cmdline.txt: {self.cmdline_after.strip()}")
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)


# --------------------------------------------------------------------------
# cmdline.txt

def set_cmdline_params(cmdline: str, params: Sequence[str]) -> str:
    """``cmdline`` with ``params`` set, every other original parameter kept.

    A ``key=value`` parameter takes the place of the first original parameter
    with the same key and removes the others (so baking twice does not stack
    ``ds=`` or ``systemd.run=``), or is appended; a bare flag is added once.
    The result is one line, ending with a newline exactly when the original
    did: the firmware reads only the first line.
    """
    tokens = cmdline.split()
    for param in params:
        if "=" not in param:
            if param not in tokens:
                tokens.append(param)
            continue
        key = param.split("=", 1)[0]
        same_key = [i for i, t in enumerate(tokens) if t.split("=", 1)[0] == key]
        if not same_key:
            tokens.append(param)
            continue
        tokens[same_key[0]] = param
        for i in reversed(same_key[1:]):
            del tokens[i]
    return " ".join(tokens) + ("\n" if cmdline.endswith("\n") else "")


def nocloud_param(instance_id: str) -> str:
    """The NoCloud hint Raspberry Pi Imager 2.x appends (``ds=nocloud;i=ID``).

    An instance id on the kernel command line overrides the one in
    ``meta-data``, so a card customised earlier by the Imager keeps its old id
    unless this parameter is replaced: pass it through `set_cmdline_params`.
    """
    if not instance_id or any(c.isspace() or c == ";" for c in instance_id):
        raise ValueError(f"instance id {instance_id!r} cannot go on the kernel command line")
    return f"ds=nocloud;i={instance_id}"


def firstrun_params(script: str = "/boot/firmware/firstrun.sh") -> list[str]:
    """The parameters Raspberry Pi Imager adds to run a first-boot script once."""
    return [
        f"systemd.run={script}",
        "systemd.run_success_action=reboot",
        "systemd.unit=kernel-command-line.target",
    ]


def _check_cmdline_edit(before: str, after: str) -> None:
    """The renderer's edit must keep one line and every original parameter."""
    if "\n" in after.rstrip("\n") or "\r" in after:
        raise ValueError("the edited cmdline.txt must stay on one line")
    new_tokens = after.split()
    new_keys = {t.split("=", 1)[0] for t in new_tokens}
    lost = [t for t in before.split() if t not in new_tokens and t.split("=", 1)[0] not in new_keys]
    if lost:
        raise ValueError(f"the cmdline.txt edit dropped original parameters: {' '.join(lost)}")


# --------------------------------------------------------------------------
# Image kinds

def detect_boot_kind(boot: BootFS) -> BootKind:
    """Which kind of image this boot partition belongs to (see module docstring)."""
    return _detect(boot)[0]


def _detect(boot: BootFS) -> tuple[BootKind, str]:
    names = {name.casefold(): name for name in boot.names()}
    cmdline = (boot.read("cmdline.txt") or b"").decode("utf-8", "replace")
    if boot.label and boot.label.casefold() == "system-boot":
        return BootKind.UBUNTU_PI, "FAT label system-boot"
    if "root=LABEL=writable" in cmdline.split():
        return BootKind.UBUNTU_PI, "cmdline.txt boots root=LABEL=writable"
    readme = boot.read("README") if "readme" in names else None
    if readme and b"Ubuntu" in readme:
        return BootKind.UBUNTU_PI, "README names Ubuntu"
    seeds = [names[n] for n in CLOUD_INIT_SEED_FILES if n in names]
    if seeds:
        return BootKind.RPIOS_CLOUD_INIT, f"boot partition has {', '.join(seeds)}"
    return BootKind.RPIOS_FIRSTRUN, "no user-data, meta-data or network-config on the boot partition"


# --------------------------------------------------------------------------
# Boot file systems

def _mtools_env(private_dir: Path) -> dict[str, str]:
    """An environment where the user's mtools configuration cannot interfere."""
    rc = private_dir / "mtoolsrc"
    # Long names on, no forced lower case, and no floppy-era geometry check,
    # which has no meaning for a partition inside an image file.
    rc.write_text("MTOOLS_SKIP_CHECK=1\nMTOOLS_NO_VFAT=0\nMTOOLS_LOWER_CASE=0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTOOLS")}
    env.update(MTOOLSRC=str(rc), MTOOLS_SKIP_CHECK="1", HOME=str(private_dir))
    return env


class ImageBootFS:
    """The FAT boot partition of an image file, read and written with mtools."""

    def __init__(self, image: Path, boot: BootPartition, workdir: Path):
        if "@@" in str(image):
            raise ImageError(f"{image}: mtools cannot open a path containing '@@'; rename the file")
        self.image = image
        self.boot = boot
        self.label = boot.fat.label
        self._spec = f"{image}@@{boot.partition.start}"
        self._workdir = workdir
        self._env = _mtools_env(workdir)
        self._names: list[str] | None = None

    def _run(self, tool: str, *args: str) -> bytes:
        # Options before -i; every exit code is checked: mcopy without -o exits
        # 1 on a name clash with nothing on stderr, so a silent 1 is a failure too.
        command = [tool, "-i", self._spec, *args]
        try:
            # No stdin: mtools asks on a terminal when a name clashes; it must never wait.
            result = subprocess.run(
                command, capture_output=True, stdin=subprocess.DEVNULL, env=self._env, check=False
            )
        except FileNotFoundError:
            raise ImageError(
                f"{tool} is not installed: bakery writes SD images with mtools "
                "(Debian/Ubuntu: apt install mtools)", exit_code=1,
            ) from None
        if result.returncode != 0:
            detail = result.stderr.decode("utf-8", "replace").strip() or "no message"
            raise ImageError(
                f"{tool} failed on the boot partition of {self.image} (exit {result.returncode}): {detail}",
                exit_code=1,
            )
        return result.stdout

    def names(self) -> list[str]:
        if self._names is None:
            listing = self._run("mdir", "-a", "-b", "::/").decode("utf-8", "surrogateescape")
            self._names = [
                line[len("::/"):] for line in listing.splitlines()
                if line.startswith("::/") and not line.endswith("/")
            ]
        return list(self._names)

    def read(self, name: str) -> bytes | None:
        stored = _stored_name(self.names(), name)
        return None if stored is None else self._run("mtype", f"::/{stored}")

    def write(self, files: Mapping[str, bytes]) -> None:
        if not files:
            return
        staging = Path(tempfile.mkdtemp(prefix="files.", dir=self._workdir))
        for name, data in files.items():
            (staging / name).write_bytes(data)
        # One mcopy for all files; -o replaces, and the names given are the ones
        # already stored (whatever their case), so no duplicate can appear.
        self._run("mcopy", "-o", *(str(staging / name) for name in files), "::/")
        self._names = None
        for name, data in files.items():
            if self._run("mtype", f"::/{name}") != data:
                raise ImageError(f"{name} reads back differently from what was written to {self.image}", exit_code=1)


class DirectoryBootFS:
    """A boot partition that is already mounted (a flashed card)."""

    label = None

    def __init__(self, root: Path):
        self.root = root

    def names(self) -> list[str]:
        return sorted(entry.name for entry in os.scandir(self.root) if entry.is_file())

    def read(self, name: str) -> bytes | None:
        stored = _stored_name(self.names(), name)
        return None if stored is None else (self.root / stored).read_bytes()

    def write(self, files: Mapping[str, bytes]) -> None:
        for name, data in files.items():
            # Each file is complete before it replaces the old one, so pulling
            # the card mid-way leaves old or new files, never a torn one.
            tmp = self.root / f".bakery-{name}.tmp"
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.root / name)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        _fsync_dir(self.root)


def _stored_name(names: Sequence[str], name: str) -> str | None:
    """The name under which FAT stores ``name``: FAT ignores case."""
    wanted = name.casefold()
    return next((n for n in names if n.casefold() == wanted), None)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and FUSE mounts) refuse fsync on a directory
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# Planning and applying the changes to a boot partition

@dataclass
class _Plan:
    kind: BootKind
    reason: str
    files: dict[str, bytes]          # keyed by the name to store
    cmdline_name: str
    cmdline_before: str
    cmdline_after: str


def _plan(boot: BootFS, where: str, files_for: FilesFor, cmdline_edit: CmdlineEdit | None) -> _Plan:
    """Everything to write, decided before anything is written."""
    names = boot.names()
    missing = [n for n in REQUIRED_BOOT_FILES if _stored_name(names, n) is None]
    if missing:
        shown = ", ".join(sorted(names)[:12]) or "nothing"
        raise ImageError(
            f"{where} is not a Raspberry Pi boot partition: it has no {' or '.join(missing)} "
            f"(it holds: {shown}). Use a Raspberry Pi OS or Ubuntu Server for Raspberry Pi image."
        )
    kind, reason = _detect(boot)
    wanted = dict(files_for(kind))
    _check_file_names(wanted)
    cmdline_name = _stored_name(names, "cmdline.txt")
    assert cmdline_name is not None
    files: dict[str, bytes] = {}
    for name, data in wanted.items():
        if name.casefold() == "cmdline.txt":
            raise ValueError("files_for must not return cmdline.txt; edit it with cmdline_edit")
        files[_stored_name(names, name) or name] = bytes(data)
    before_raw = boot.read(cmdline_name) or b""
    try:
        before = before_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ImageError(f"{where}: cmdline.txt is not text; the image looks damaged") from None
    after = before
    if cmdline_edit is not None:
        after = cmdline_edit(before, kind)
        _check_cmdline_edit(before, after)
        if after != before:
            files[cmdline_name] = after.encode("utf-8")
    return _Plan(kind, reason, files, cmdline_name, before, after)


def _check_file_names(files: Mapping[str, bytes]) -> None:
    seen: dict[str, str] = {}
    for name in files:
        if not name or name in (".", "..") or any(c in _FAT_FORBIDDEN for c in name) or len(name) > 255:
            raise ValueError(f"{name!r} cannot be a file name at the root of a FAT partition")
        if name.casefold() in seen:
            raise ValueError(f"{seen[name.casefold()]!r} and {name!r} are the same name on FAT")
        seen[name.casefold()] = name


def _report(plan: _Plan, started: float, **where) -> BakeReport:
    return BakeReport(
        kind=plan.kind, reason=plan.reason, written=sorted(plan.files),
        cmdline_before=plan.cmdline_before, cmdline_after=plan.cmdline_after,
        seconds=time.monotonic() - started, **where,
    )


# --------------------------------------------------------------------------
# Public entry points

def bake(rendered, *, image: Optional[Path] = None, output: Optional[Path] = None, in_place: bool = False,
         boot_dir: Optional[Path] = None, progress: Optional[Progress] = None) -> BakeReport:
    """Write ``rendered``'s NoCloud files onto a card's boot partition
    (``boot_dir``) or an image (a copy at ``output``, or ``in_place``)."""
    import uuid

    from .nocloud import seed_files
    from .userdata import user_data

    # A new instance id on every bake: a re-baked card runs first boot again.
    instance = f"bakery-{uuid.uuid4().hex[:16]}"
    files = seed_files(rendered.plan, user_data(rendered), instance=instance)

    def files_for(kind: BootKind) -> Mapping[str, bytes]:
        if not kind.has_cloud_init:
            raise ImageError(
                f"this image ({kind.value}) has no cloud-init, so it cannot read bakery's user-data. "
                "Use a Raspberry Pi OS image with cloud-init (Trixie releases from late 2025 on) "
                "or Ubuntu Server for Raspberry Pi.")
        return files

    def cmdline_edit(cmdline: str, kind: BootKind) -> str:
        # An i= on the kernel command line overrides meta-data (Raspberry Pi
        # Imager leaves one there): replace it so the new bake is a new instance.
        return set_cmdline_params(cmdline, [nocloud_param(instance)]) if kind.has_cloud_init else cmdline

    if boot_dir is not None:
        return bake_boot_dir(boot_dir, files_for, cmdline_edit)
    return bake_image(image, output, in_place=in_place, files_for=files_for, cmdline_edit=cmdline_edit,
                      progress=progress)


def bake_boot_dir(boot_dir: Path, files_for: FilesFor, cmdline_edit: CmdlineEdit | None = None) -> BakeReport:
    """Write the first-boot files onto a card that is flashed and mounted."""
    started = time.monotonic()
    boot_dir = Path(boot_dir)
    if not boot_dir.exists():
        raise ImageError(f"{boot_dir} does not exist: mount the card's boot partition (bootfs or system-boot) and pass its folder")
    if not boot_dir.is_dir():
        raise ImageError(f"{boot_dir} is not a folder: --boot-dir takes the mounted boot partition; for an image file use --image")
    for nested in ("boot/firmware", "boot"):
        if not (boot_dir / "cmdline.txt").exists() and (boot_dir / nested / "cmdline.txt").is_file():
            raise ImageError(
                f"{boot_dir} looks like the root file system; the boot partition is {boot_dir / nested}"
            )
    boot = DirectoryBootFS(boot_dir)
    plan = _plan(boot, str(boot_dir), files_for, cmdline_edit)
    try:
        boot.write(plan.files)
    except OSError as exc:
        raise ImageError(
            f"cannot write to {boot_dir}: {exc.strerror} (is the card mounted read-write?)", exit_code=1
        ) from None
    return _report(plan, started, boot_dir=boot_dir)


def bake_image(
    source: Path,
    output: Path | None = None,
    *,
    in_place: bool = False,
    files_for: FilesFor,
    cmdline_edit: CmdlineEdit | None = None,
    progress: Optional[Progress] = None,
) -> BakeReport:
    """Bake ``source`` (``.img`` or ``.img.xz``) into ``output``, or in place.

    The copy goes to a temporary file beside ``output`` (a multi-GB image must
    not cross file systems on rename) and replaces ``output`` only when
    complete; on any failure nothing is left behind. In place, every check and
    every decision is made before the first write. ``progress(label, total)``
    gives a context whose value is called with each count of bytes copied.
    """
    started = time.monotonic()
    source = Path(source)
    compressed = source.name.lower().endswith(".xz")
    _check_source(source)
    if in_place:
        if compressed:
            raise ImageError(
                f"{source} is compressed and cannot be baked in place: "
                f"write a baked copy with -o {_decompressed_name(source)}"
            )
        if output is not None and not _same_file(Path(output), source):
            raise ImageError("give either --in-place or an output file (-o), not both")
        if not os.access(source, os.W_OK):
            raise ImageError(
                f"cannot bake {source} in place: it is not writable; change its permissions "
                "or write a baked copy with -o", exit_code=1,
            )
        with _workdir() as work:
            boot = _open_boot(source, work)
            plan = _plan(boot, _where(source, boot), files_for, cmdline_edit)
            boot.write(plan.files)
        return _report(plan, started, image=source, partition=boot.boot)

    if output is None:
        raise ImageError(f"say where to write the baked image (-o pi.img), or bake {source} with --in-place")
    output = Path(output)
    _check_output(output, source)
    with _workdir() as work:
        plan = None
        if not compressed:
            # Decide (and refuse) before copying gigabytes.
            source_boot = _open_boot(source, work)
            plan = _plan(source_boot, _where(source, source_boot), files_for, cmdline_edit)
        with _temporary_beside(output) as tmp:
            _copy_image(source, tmp, compressed=compressed, progress=progress)
            boot = _open_boot(tmp, work, shown_as=source)
            if plan is None:
                plan = _plan(boot, _where(source, boot), files_for, cmdline_edit)
            boot.write(plan.files)
    return _report(plan, started, image=output, partition=boot.boot)


# --------------------------------------------------------------------------
# Checks on paths

def _check_source(source: Path) -> None:
    try:
        mode = source.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"image not found: {source}") from None
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        raise ImageError(
            f"{source} is a device: bakery does not write to cards directly. Bake an image file "
            "(--image IMAGE -o pi.img) and flash pi.img with Raspberry Pi Imager (Use custom) or dd, "
            "or mount the flashed card and use --boot-dir"
        )
    if stat.S_ISDIR(mode):
        raise ImageError(f"{source} is a folder: for a mounted boot partition use --boot-dir")
    if not stat.S_ISREG(mode):
        raise ImageError(f"{source} is not a regular file")


def _check_output(output: Path, source: Path) -> None:
    if _same_file(output, source):
        raise ImageError(
            f"the output {output} is the input image: use --in-place to bake it where it is, "
            "or give another output file"
        )
    if output.name.lower().endswith(".xz"):
        raise ImageError(f"bakery writes an uncompressed image: name the output {_decompressed_name(output)}")
    if output.exists():
        mode = output.stat().st_mode
        if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
            raise ImageError(
                f"{output} is a device: bakery does not write to cards directly. Write an image "
                "file and flash it with Raspberry Pi Imager (Use custom) or dd"
            )
        if stat.S_ISDIR(mode):
            raise ImageError(f"{output} is a folder: give the name of the image file to write")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _decompressed_name(path: Path) -> str:
    name = path.name
    return name[:-3] if name.lower().endswith(".xz") else name


def _where(image: Path, boot: ImageBootFS) -> str:
    return f"partition {boot.boot.partition.number} of {image}"


def _open_boot(image: Path, work: Path, shown_as: Path | None = None) -> ImageBootFS:
    try:
        boot = find_boot_partition(image)
    except PartitionError as exc:
        raise ImageError(
            f"{shown_as or image} cannot be baked: {exc}. bakery needs a Raspberry Pi OS or "
            "Ubuntu Server for Raspberry Pi image (.img or .img.xz)"
        ) from None
    return ImageBootFS(image, boot, work)


@contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bakery-sd."))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A temporary file in ``path``'s folder, renamed to ``path`` on success.

    Like `bakery.fsutil.atomic_output`, but yields a path: mtools needs a file
    name to open, and the copy is written with positioned writes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)  # mode 0600: the baked image carries the user-data secrets
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------
# Copying images

def _copy_image(source: Path, target: Path, *, compressed: bool, progress: Optional[Progress]) -> None:
    """Copy ``source`` to ``target``, decompressing ``.xz``, leaving zeros as holes."""
    try:
        with open(source, "rb") as raw, open(target, "r+b") as out:
            total = os.fstat(raw.fileno()).st_size
            label = f"Decompressing {source.name}" if compressed else f"Copying {source.name}"
            with (progress or _no_progress)(label, total) as advance:
                if compressed:
                    size = _copy_xz(raw, out.fileno(), advance)
                else:
                    size = _copy_sparse(raw.fileno(), out.fileno(), total, advance)
            os.ftruncate(out.fileno(), size)
    except lzma.LZMAError as exc:
        raise ImageError(f"{source} is not a valid .xz file ({exc}); download it again") from None
    except EOFError:
        raise ImageError(f"{source} ends early: the .xz download is incomplete; download it again") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ImageError(f"not enough free space in {target.parent} for the baked image", exit_code=1) from None
        raise ImageError(f"copying {source} to {target.parent} failed: {exc.strerror or exc}", exit_code=1) from None


def _write_unless_zero(fd: int, data: bytes | memoryview, offset: int) -> None:
    zero = _ZERO_CHUNK if len(data) == CHUNK else bytes(len(data))
    if data != zero:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


def _copy_sparse(src: int, dst: int, size: int, advance: Callable[[int], None]) -> int:
    """Copy only the data extents of ``src`` (SEEK_DATA/SEEK_HOLE), and skip zeros."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
            end = os.lseek(src, start, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos: the rest is a hole
                break
            start, end = pos, size  # file system without SEEK_DATA: read it all
        advance(start - pos)
        pos = start
        while pos < end:
            data = os.pread(src, min(CHUNK, end - pos), pos)
            if not data:
                return size
            _write_unless_zero(dst, data, pos)
            pos += len(data)
            advance(len(data))
    advance(size - pos)
    return size


def _copy_xz(raw, dst: int, advance: Callable[[int], None]) -> int:
    """Decompress a (possibly multi-stream) .xz while copying; progress in compressed bytes."""
    pos = 0
    done = 0
    buffer = bytearray(CHUNK)
    with lzma.LZMAFile(raw) as xz:
        while True:
            count = xz.readinto(buffer)
            if not count:
                break
            _write_unless_zero(dst, memoryview(buffer)[:count], pos)
            pos += count
            now = raw.tell()
            advance(now - done)
            done = now
    return pos


@contextmanager
def _no_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None
