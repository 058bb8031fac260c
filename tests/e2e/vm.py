"""A throwaway QEMU guest for the end-to-end tests.

Owns one VM's life: a qcow2 overlay on the cached base image, a NoCloud seed,
user-mode networking with host forwards bound to 127.0.0.1 on free ports, the
serial console in a log file, SSH with a per-run key, and the timings of each
phase measured from power-on.

QEMU runs under TCG unless a probe boot shows that KVM really works: on nested
hosts /dev/kvm can exist and still fail as soon as the guest kernel runs.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .image import BaseImage

BOOT_FINISHED = "/var/lib/cloud/instance/boot-finished"
GUEST_LOGS = {
    "cloud-init output": "/var/log/cloud-init-output.log",
    "first boot": "/var/log/bakery/first-boot.log",
}

SSH_OPTIONS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=10",
    "-o", "LogLevel=ERROR",
    # A guest under TCG can be slow to answer; keep dead sessions from hanging.
    "-o", "ServerAliveInterval=10",
    "-o", "ServerAliveCountMax=6",
]


class VMError(RuntimeError):
    """The guest did not reach a state in time, or QEMU died."""


def wait_for(predicate, timeout: float = 60, interval: float = 2) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` passes (False);
    a failed request, command or assertion counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except (OSError, http.client.HTTPException, AssertionError, VMError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def generate_ssh_key(directory: Path) -> Path:
    """A fresh ed25519 key pair; returns the private key path (``.pub`` beside it)."""
    key = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bakery-e2e", "-f", str(key)],
        check=True,
    )
    return key


def make_seed_iso(path: Path, files: Mapping[str, bytes]) -> Path:
    """The NoCloud seed, made by bakery's own seed writer."""
    from bakery.outputs.seed import write_seed_iso

    return write_seed_iso(path, files)


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
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: str


@dataclass
class VM:
    image: BaseImage
    workdir: Path
    seed: Path
    ssh_key: Path
    user: str
    extra_ports: tuple[int, ...] = ()
    memory_mb: int = 2048
    cpus: int = 2
    ports: dict[int, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    accel: str = "tcg"
    _process: subprocess.Popen | None = None
    _started: float = 0.0

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    def start(self) -> None:
        overlay = self.workdir / "disk.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image.disk), "-F", "raw", str(overlay)],
            check=True,
        )
        for guest_port in (22, 80, 443, *self.extra_ports):
            self.ports[guest_port] = free_port()
        forwards = ",".join(
            f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in self.ports.items()
        )
        if _kvm_usable(self.image.kernel):
            self.accel, accel_args = "kvm", ["-accel", "kvm", "-cpu", "host"]
        else:
            self.accel, accel_args = "tcg", ["-accel", "tcg,thread=multi", "-cpu", "max"]
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
        self._started = time.monotonic()
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL,
            stdout=open(self.workdir / "qemu.out", "wb"), stderr=subprocess.STDOUT,
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def mark(self, phase: str) -> float:
        """Record when ``phase`` was reached, in seconds since power-on."""
        self.timings[phase] = round(self.elapsed(), 1)
        return self.timings[phase]

    def _check_alive(self) -> None:
        if not self.running:
            raise VMError(f"QEMU exited; console tail:\n{self.console_tail()}")

    # --- SSH -----------------------------------------------------------------

    def ssh_command(self, user: str | None = None) -> list[str]:
        return ["ssh", *SSH_OPTIONS, "-i", str(self.ssh_key), "-p", str(self.ports[22]),
                f"{user or self.user}@127.0.0.1"]

    def ssh(self, command: str, *, user: str | None = None, check: bool = True,
            timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``command`` in the guest through a login-less SSH session."""
        result = subprocess.run(
            [*self.ssh_command(user), command],
            capture_output=True, text=True, timeout=timeout, input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise VMError(
                f"guest command failed ({result.returncode}): {command}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def _wait(self, probe, what: str, timeout: float, interval: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if probe():
                    return
            except (OSError, subprocess.TimeoutExpired, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise VMError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def _ssh_ok(self, command: str) -> bool:
        return self.ssh(command, check=False, timeout=30).returncode == 0

    def wait_ssh(self, timeout: float = 300) -> float:
        self._wait(lambda: self._ssh_ok("true"), "SSH", timeout)
        return self.mark("ssh")

    def wait_boot_finished(self, timeout: float = 1200) -> float:
        # Not `cloud-init status --wait`: it returns on the first recorded
        # error while later modules are still running.
        self._wait(lambda: self._ssh_ok(f"test -e {BOOT_FINISHED}"), "cloud-init to finish", timeout, 5)
        return self.mark("boot-finished")

    # --- HTTP ----------------------------------------------------------------

    def http(self, path: str = "/", *, scheme: str = "https", host: str | None = None,
             port: int | None = None, timeout: float = 30) -> HttpResponse:
        """One request to the forwarded guest port (``port``, else 443 or 80 by
        scheme); redirects are not followed, the self-signed certificate is not
        verified."""
        port = self.ports[port or (443 if scheme == "https" else 80)]
        if scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
        else:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Host": host} if host else {})
            response = connection.getresponse()
            body = response.read().decode("utf-8", "replace")
            headers = {name.lower(): value for name, value in response.getheaders()}
            return HttpResponse(response.status, headers, body)
        finally:
            connection.close()

    def wait_https(self, path: str = "/", timeout: float = 300, host: str | None = None) -> float:
        return self.wait_http(path, timeout, host, scheme="https")

    def wait_http(self, path: str = "/", timeout: float = 300, host: str | None = None, *,
                  scheme: str = "http", port: int | None = None) -> float:
        """Wait for a 200 on ``path``; the phase is recorded under the scheme's name."""
        self._wait(lambda: self.http(path, scheme=scheme, host=host, port=port).status == 200,
                   f"{scheme.upper()} 200 on {path}", timeout)
        return self.mark(scheme)

    # --- lifecycle -----------------------------------------------------------

    def boot_id(self) -> str:
        return self.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()

    def reboot(self, timeout: float = 300) -> float:
        """Reboot from inside the guest and wait until SSH answers from the new boot."""
        before = self.boot_id()
        started = time.monotonic()
        self.ssh("sudo -n systemctl reboot", check=False, timeout=30)
        self._wait(lambda: self._ssh_ok(f"test \"$(cat /proc/sys/kernel/random/boot_id)\" != {before}"),
                   "SSH after reboot", timeout)
        self.timings["reboot-ssh"] = round(time.monotonic() - started, 1)
        return self.timings["reboot-ssh"]

    def console_tail(self, lines: int = 60) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def dump_logs(self, out=None, lines: int = 150) -> None:
        """Print the guest's cloud-init and first-boot logs (or the console if SSH is down)."""
        out = out or sys.stderr
        try:
            for title, path in GUEST_LOGS.items():
                result = self.ssh(f"sudo -n tail -n {lines} {path}", check=False, timeout=60)
                print(f"===== guest {title}: {path} =====", file=out)
                print(result.stdout or result.stderr, file=out)
            status = self.ssh("cloud-init status --long", check=False, timeout=60)
            print("===== cloud-init status --long =====", file=out)
            print(status.stdout + status.stderr, file=out)
        except Exception as error:  # the logs are a courtesy; the failure is elsewhere
            print(f"(could not read guest logs over SSH: {error})", file=out)
        print(f"===== serial console tail: {self.console_log} =====", file=out)
        print(self.console_tail(), file=out)

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


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
