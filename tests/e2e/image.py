"""Base Debian 12 VM image for the end-to-end tests.

Owns building, caching and locating the guest image: a root filesystem made
from Debian packages only (debootstrap, then apt inside the chroot), written
into a raw ext4 image with ``mkfs.ext4 -d`` (no loop mounts), plus the kernel
and initrd taken from that root filesystem so QEMU can boot it without a boot
loader. The root filesystem tree is kept too: the container tier boots it
under an overlay, again without a loop mount.

The image holds what a stock Debian cloud image holds and nothing of the
server bakery builds: every server package must come from the user-data.

The cache lives in ``${BAKERY_E2E_CACHE:-~/.cache/bakery-e2e}/<recipe hash>/``.
A build happens in a temporary directory beside it and is renamed into place
only when complete, so an interrupted build never looks cached.

Run ``python -m tests.e2e.image`` to build (or find) the image and print its
directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
IMAGE_SIZE = "6G"

# What a Debian cloud image brings; cloud-init then installs the rest.
PACKAGES = [
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "openssh-server",
    "sudo",
    "ifupdown",
    "isc-dhcp-client",
    "netbase",
    "iproute2",
    "iputils-ping",
    "locales",
    "ca-certificates",
    "procps",
    "less",
    "curl",
    "gnupg",
    "e2fsprogs",
]

SOURCES_LIST = f"""\
deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb {SECURITY_MIRROR} {SUITE}-security main
"""

FILES = {
    "etc/fstab": "/dev/vda / ext4 rw,discard,errors=remount-ro 0 1\n",
    "etc/hostname": "debian\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    "etc/default/locale": "LANG=en_US.UTF-8\n",
    "etc/locale.gen": "en_US.UTF-8 UTF-8\n",
    # cloud-init's fallback network config is rendered into interfaces.d.
    "etc/network/interfaces": "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n",
    "etc/cloud/cloud.cfg.d/90_datasource.cfg": "datasource_list: [NoCloud, None]\n",
    "etc/apt/sources.list": SOURCES_LIST,
}

# Bump when the build steps below change in a way the lists above do not show.
RECIPE_VERSION = 2

RECIPE = {
    "version": RECIPE_VERSION,
    "suite": SUITE,
    "mirror": MIRROR,
    "packages": PACKAGES,
    "files": FILES,
    "size": IMAGE_SIZE,
}

@dataclass(frozen=True)
class BaseImage:
    """A built image: raw disk plus the kernel and initrd to boot it with."""

    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "base.img"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def rootfs(self) -> Path:
        """The same root filesystem as a directory tree; never written to."""
        return self.directory / "rootfs"


def cache_root() -> Path:
    configured = os.environ.get("BAKERY_E2E_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "bakery-e2e"


def recipe_hash() -> str:
    encoded = json.dumps(RECIPE, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _run(args: list[str], log, **kwargs) -> None:
    log.write(f"+ {' '.join(args)}\n")
    log.flush()
    subprocess.run(args, check=True, stdout=log, stderr=subprocess.STDOUT, **kwargs)


def _chroot(rootfs: Path, script: str, log) -> None:
    # A private mount namespace: /proc and /dev vanish with the process even
    # if the build is killed, so nothing stays mounted on the host.
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LC_ALL": "C",
        "HOME": "/root",
    }
    wrapper = (
        f"mount -t proc proc {rootfs}/proc && "
        f"mount --rbind /dev {rootfs}/dev && "
        f"mount -t sysfs sysfs {rootfs}/sys && "
        f"exec chroot {rootfs} /bin/sh -ec \"$0\""
    )
    _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapper, script], log, env=env)


def _build(target: Path, log) -> None:
    rootfs = target / "rootfs"
    _run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), MIRROR], log)

    for relative, content in FILES.items():
        path = rootfs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    # Keep daemons from starting inside the chroot during installation.
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)

    _chroot(
        rootfs,
        "apt-get update\n"
        "apt-get install -y --no-install-recommends " + " ".join(PACKAGES) + "\n"
        "locale-gen\n"
        "apt-get clean\n",
        log,
    )

    policy.unlink()
    # First boot must look like a fresh instance: new machine id, new host
    # keys, the resolver handed out by DHCP, fresh package lists.
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/resolv.conf").unlink(missing_ok=True)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
    shutil.rmtree(rootfs / "var/lib/cloud", ignore_errors=True)

    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise RuntimeError(f"no kernel or initrd in {rootfs}/boot")
    shutil.copyfile(kernels[-1], target / "vmlinuz")
    shutil.copyfile(initrds[-1], target / "initrd.img")

    _run(["mkfs.ext4", "-q", "-L", "root", "-d", str(rootfs), str(target / "base.img"), IMAGE_SIZE], log)
    (target / "recipe.json").write_text(json.dumps(RECIPE, indent=2, sort_keys=True) + "\n")


def _remove_stale_builds(root: Path, max_age: float = 3 * 3600) -> None:
    """Drop temporary folders of builds that were killed (a live build is younger)."""
    for leftover in root.glob(".build-*"):
        if time.time() - leftover.stat().st_mtime > max_age:
            shutil.rmtree(leftover, ignore_errors=True)


def ensure_image(log=None) -> BaseImage:
    """Return the cached image for the current recipe, building it if missing."""
    root = cache_root()
    final = root / recipe_hash()
    image = BaseImage(final)
    if image.disk.exists():
        return image
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    temporary = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=root))
    log = log or sys.stderr
    try:
        _build(temporary, log)
        try:
            temporary.rename(final)
        except OSError:
            # Another build finished first; its image is as good as ours.
            if not image.disk.exists():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return image


def main() -> int:
    image = ensure_image()
    print(image.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
