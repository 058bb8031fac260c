"""Base VM images of the distributions users boot, for the end-to-end tests.

Owns building, caching and locating one guest image per row of ``DISTROS``
(Ubuntu 24.04 and 22.04, Debian 12 and 13): a root filesystem made from the
distribution's own packages only (debootstrap, then apt inside the chroot),
written into a raw ext4 image with ``mkfs.ext4 -d`` (no loop mounts), plus the
kernel and initrd taken from that root filesystem so QEMU can boot it without
a boot loader. The root filesystem tree is kept too: the container tier boots
it under an overlay, again without a loop mount.

An image holds what the distribution's stock cloud image holds and nothing of
the server bakery builds: every server package must come from the user-data.

The cache lives in ``${BAKERY_E2E_CACHE:-~/.cache/bakery-e2e}/<distro>-<recipe hash>/``.
A build happens in a temporary directory beside it and is renamed into place
only when complete, so an interrupted build never looks cached.

Run ``python -m tests.e2e.image [DISTRO...]`` to build (or find) images and
print their directories.
"""

from __future__ import annotations

import fcntl
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

DEBIAN = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
UBUNTU = "http://archive.ubuntu.com/ubuntu"
UBUNTU_SECURITY = "http://security.ubuntu.com/ubuntu"
IMAGE_SIZE = "6G"

# What every image brings besides its distribution's own cloud set.
COMMON_PACKAGES = [
    "initramfs-tools", "systemd-sysv", "udev", "dbus", "cloud-init", "openssh-server", "sudo",
    "netbase", "iproute2", "iputils-ping", "locales", "ca-certificates", "procps", "less",
    "curl", "gnupg", "e2fsprogs",
]


@dataclass(frozen=True)
class Distro:
    """One row per image users boot: where its packages come from and what
    its cloud image holds. ``name`` is the id the tests are parametrized by."""

    name: str
    suite: str
    family: str  # "debian" or "ubuntu"
    packages: tuple[str, ...]
    # Debian 12's debootstrap builds Ubuntu releases with the gutsy script.
    debootstrap_script: str = ""

    @property
    def mirror(self) -> str:
        return DEBIAN if self.family == "debian" else UBUNTU

    @property
    def apt_sources(self) -> dict[str, str]:
        """The package sources, as the distribution's cloud images ship them:
        on Ubuntu the suites and components cloud-init renders again at first
        boot (so the lists a first boot fetches early stay valid)."""
        if self.family == "debian":
            return {"etc/apt/sources.list": (f"deb {DEBIAN} {self.suite} main\n"
                                             f"deb {DEBIAN} {self.suite}-updates main\n"
                                             f"deb {DEBIAN_SECURITY} {self.suite}-security main\n")}
        components = "main restricted universe multiverse"
        suites = [(UBUNTU, f"{self.suite} {self.suite}-updates {self.suite}-backports"),
                  (UBUNTU_SECURITY, f"{self.suite}-security")]
        if self.suite == "jammy":  # Ubuntu before 24.04: one line per suite
            return {"etc/apt/sources.list": "".join(f"deb {uri} {suite} {components}\n"
                                                    for uri, group in suites for suite in group.split())}
        keyring = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
        return {"etc/apt/sources.list": "# Ubuntu sources have moved to /etc/apt/sources.list.d/ubuntu.sources\n",
                "etc/apt/sources.list.d/ubuntu.sources": "\n".join(
                    f"Types: deb\nURIs: {uri}\nSuites: {group}\nComponents: {components}\nSigned-By: {keyring}\n"
                    for uri, group in suites)}

    @property
    def files(self) -> dict[str, str]:
        files = {
            "etc/fstab": "/dev/vda / ext4 rw,discard,errors=remount-ro 0 1\n",
            "etc/hostname": f"{self.family}\n",
            "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
            "etc/default/locale": "LANG=en_US.UTF-8\n",
            "etc/locale.gen": "en_US.UTF-8 UTF-8\n",
            "etc/cloud/cloud.cfg.d/90_datasource.cfg": "datasource_list: [NoCloud, None]\n",
            **self.apt_sources,
        }
        if self.family == "debian":
            # cloud-init's fallback network config is rendered into interfaces.d.
            files["etc/network/interfaces"] = "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n"
        return files

    @property
    def recipe(self) -> dict:
        return {"version": RECIPE_VERSION, "suite": self.suite, "mirror": self.mirror,
                "script": self.debootstrap_script, "packages": list(COMMON_PACKAGES + list(self.packages)),
                "files": self.files, "size": IMAGE_SIZE}


DISTROS = {d.name: d for d in (
    # The image every cloud target defaults to: its cloud images are seeded
    # from ubuntu-cloud-minimal; ssh.socket is enabled, ssh.service is not.
    Distro("ubuntu-24.04", "noble", "ubuntu",
           ("linux-image-virtual", "systemd-resolved", "netplan.io", "ubuntu-cloud-minimal"), "gutsy"),
    # 22.04 has no ubuntu-cloud-minimal: its minimal set plus what its cloud image adds.
    Distro("ubuntu-22.04", "jammy", "ubuntu",
           ("linux-image-virtual", "netplan.io", "ubuntu-minimal", "ssh-import-id", "ufw",
            "unattended-upgrades", "systemd-timesyncd"), "gutsy"),
    Distro("debian-12", "bookworm", "debian",
           ("linux-image-cloud-amd64", "ifupdown", "isc-dhcp-client")),
    # The base of Raspberry Pi OS Trixie: cloud-init 25, Python 3.13, OpenSSH 10.
    Distro("debian-13", "trixie", "debian",
           ("linux-image-cloud-amd64", "ifupdown", "isc-dhcp-client")),
)}
# The test of record: what every cloud target boots by default.
RECORD = "ubuntu-24.04"

# Bump when the build steps below change in a way the rows above do not show.
RECIPE_VERSION = 3

@dataclass(frozen=True)
class BaseImage:
    """A built image: raw disk plus the kernel and initrd to boot it with."""

    directory: Path
    distro: Distro

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


def recipe_hash(distro: Distro) -> str:
    encoded = json.dumps(distro.recipe, sort_keys=True).encode()
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


def _build(target: Path, distro: Distro, log) -> None:
    rootfs = target / "rootfs"
    command = ["debootstrap", "--variant=minbase"]
    if distro.family == "ubuntu":
        command.append("--components=main,universe")
    command += [distro.suite, str(rootfs), distro.mirror]
    if distro.debootstrap_script:
        command.append(f"/usr/share/debootstrap/scripts/{distro.debootstrap_script}")
    _run(command, log)

    for relative, content in distro.files.items():
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
        "apt-get install -y --no-install-recommends " + " ".join(distro.recipe["packages"]) + "\n"
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
    if distro.family == "ubuntu":
        # As on Ubuntu's cloud images: systemd-resolved's stub answers.
        (rootfs / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
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
    (target / "recipe.json").write_text(json.dumps(distro.recipe, indent=2, sort_keys=True) + "\n")


def _remove_stale_builds(root: Path, max_age: float = 3 * 3600) -> None:
    """Drop temporary folders of builds that were killed (a live build is younger)."""
    for leftover in root.glob(".build-*"):
        if time.time() - leftover.stat().st_mtime > max_age:
            shutil.rmtree(leftover, ignore_errors=True)


def ensure_image(distro: str = RECORD, log=None) -> BaseImage:
    """Return the cached image of ``distro`` (a DISTROS key) for the current
    recipe, building it if missing."""
    row = DISTROS[distro]
    root = cache_root()
    final = root / f"{row.name}-{recipe_hash(row)}"
    image = BaseImage(final, row)
    if image.disk.exists():
        return image
    root.mkdir(parents=True, exist_ok=True)
    # One build per image at a time: scripts/test may be building it in the
    # background while the tests ask for it; the second caller waits for it.
    with open(root / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image.disk.exists():
            return image
        return _build_into(final, image, row, log)


def _build_into(final: Path, image: BaseImage, row, log) -> BaseImage:
    root = final.parent
    _remove_stale_builds(root)
    temporary = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=root))
    log = log or sys.stderr
    try:
        _build(temporary, row, log)
        try:
            temporary.rename(final)
        except OSError:
            # Another build finished first; its image is as good as ours.
            if not image.disk.exists():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return image


def main(argv: list[str]) -> int:
    for name in argv or [RECORD]:
        print(ensure_image(name).directory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
