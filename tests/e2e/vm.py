"""A throwaway QEMU guest for the end-to-end tests: the test of record.

Owns how one VM runs: a qcow2 overlay on the cached base image, the NoCloud
seed as a CD, user-mode networking with host forwards bound to 127.0.0.1 on
free ports, and the serial console in a log file. What the tests do with a
guest (SSH, HTTP, waits, reboot, logs) lives in ``guest.py``.

QEMU runs under TCG unless a probe boot shows that KVM really works: on nested
hosts /dev/kvm can exist and still fail as soon as the guest kernel runs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .guest import Guest


def _kvm_usable(kernel: Path) -> bool:
    """True when a probe boot of the guest kernel runs under KVM.

    The kernel boots with no root disk and panics straight away; under
    working KVM that panic reaches the console within seconds.
    """
    choice = os.environ.get("BAKERY_E2E_ACCEL")
    if choice in ("kvm", "tcg"):
        return choice == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cpuinfo = Path("/proc/cpuinfo").read_text()
    if " vmx" not in cpuinfo and " svm" not in cpuinfo:
        return False
    try:
        probe = subprocess.run(
            ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256",
             "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
             "-no-reboot", "-display", "none", "-serial", "stdio", "-monitor", "none"],
            capture_output=True, text=True, timeout=30,
        )
    except subprocess.TimeoutExpired:
        return False
    return "Kernel panic" in probe.stdout and "KVM internal error" not in probe.stderr


@dataclass
class VM(Guest):
    memory_mb: int = 2048
    cpus: int = 2
    accel: str = "tcg"
    _process: subprocess.Popen | None = None

    def start(self) -> None:
        """Power on: a fresh overlay disk the first time; after ``cut_power``
        the same disk."""
        overlay = self.workdir / "disk.qcow2"
        if not overlay.exists():
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image.disk), "-F", "raw", str(overlay)],
                check=True,
            )
        self._allocate_ports()
        forwards = ",".join(
            f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in self.ports.items()
        )
        if _kvm_usable(self.image.kernel):
            self.accel, accel_args = "kvm", ["-accel", "kvm", "-cpu", "host"]
        else:
            # Not `-cpu max`: with AVX2 on offer, glibc and Python take code
            # paths TCG emulates slowly. Measured here with the baseline
            # x86-64 CPU: Python ~30% and apt installs ~13% faster.
            self.accel, accel_args = "tcg", ["-accel", "tcg,thread=multi", "-cpu", "qemu64"]
        command = [
            "qemu-system-x86_64", *accel_args,
            "-smp", str(self.cpus), "-m", str(self.memory_mb),
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", "root=/dev/vda rw console=ttyS0 quiet",
            # The overlay is thrown away: no need to wait for the host's disk.
            "-drive", f"file={overlay},if=virtio,format=qcow2,discard=unmap,cache=unsafe",
            "-drive", f"file={self.seed},media=cdrom,readonly=on",
            "-netdev", f"user,id=net0,{forwards}",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
            "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.console_log}",
        ]
        (self.workdir / "qemu.cmd").write_text(" ".join(command) + "\n")
        self._power_on()
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL,
            stdout=open(self.workdir / "qemu.out", "wb"), stderr=subprocess.STDOUT,
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_stopped(self, timeout: float = 120) -> None:
        self._process.wait(timeout=timeout)
        self._process = None

    def cut_power(self) -> None:
        """SIGKILL QEMU: what the guest had not written to its disk is lost."""
        self.close_ssh()
        self._process.kill()
        self._process.wait()
        self._process = None

    def stop(self, timeout: float = 60) -> None:
        """Power off cleanly if the guest answers, else kill QEMU."""
        if self._process is None:
            return
        if self._process.poll() is None:
            try:
                self.ssh("sudo -n systemctl poweroff", check=False, timeout=15)
                self._process.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, OSError):
                pass
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        self.close_ssh()
