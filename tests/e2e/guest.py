"""What every end-to-end guest offers the tests, whatever runs it.

Owns the part of a guest the checks talk to: SSH with the per-run key to a
forwarded port on 127.0.0.1, HTTP(S) requests to the other forwarded ports,
the waits for SSH, cloud-init and HTTP, a reboot, the guest's logs on failure,
and the timings of each phase measured from power-on.

Two tiers fill in how the guest runs (``start``, ``stop``, ``running``,
``console_log``): ``vm.VM`` boots a QEMU virtual machine (the test of record)
and ``container.Container`` boots the same root filesystem with
``systemd-nspawn`` on the host kernel (the fast tier).
"""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from bakery.status import next_poll

from .image import BaseImage

BOOT_FINISHED = "/var/lib/cloud/instance/boot-finished"
# bakery's first-boot state: "running N/T STEP", then "ready" or "failed STEP".
FIRST_BOOT_STATUS = "/var/lib/cloud/instance/bakery/status"
GUEST_LOGS = {
    "cloud-init output": "/var/log/cloud-init-output.log",
    "first boot": "/var/log/bakery/first-boot.log",
}
# Every tier forwards these guest ports, plus the ones a scenario adds.
FORWARDED_PORTS = (22, 80, 443)

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
# The servers rate-limit SSH (ufw limit: 6 new connections in 30 s from one
# address), and the checks run hundreds of commands: they share one
# connection per guest and user, as the README tells users to.
SSH_SHARING = ["-o", "ControlMaster=auto", "-o", "ControlPersist=120"]


class GuestError(RuntimeError):
    """The guest did not reach a state in time, or it died."""


class GuestPanic(GuestError):
    """The guest's kernel panicked: seen here under QEMU's TCG at random (at
    4 s and at 223 s of a boot, in get_random_u32 and kmem_cache_alloc), in
    code bakery does not touch. Raised at once, not after a wait's timeout."""


PANIC = b"Kernel panic - not syncing"


def wait_for(predicate, timeout: float = 60, interval: float = 2) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` passes (False);
    a failed request, command or assertion counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except (OSError, http.client.HTTPException, AssertionError, GuestError):
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


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: str


@dataclass
class Guest:
    image: BaseImage
    workdir: Path
    seed: Path
    ssh_key: Path
    user: str
    extra_ports: tuple[int, ...] = ()
    ports: dict[int, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # What runs the guest, for reports: "kvm", "tcg" or "nspawn".
    accel: str = ""
    # The disk has booted before (a baked image's copy): its firewall
    # rate-limits SSH from its first power-on here (see _ssh_pause).
    booted_before: bool = False
    _started: float = 0.0
    _power_ons: int = 0
    _control_dir: Path | None = None
    _console_seen: int = 0

    # --- what a tier provides ---------------------------------------------------

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 60) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def cut_power(self) -> None:
        """Stop at once, with no shutdown; ``start`` then boots the same disk."""
        raise NotImplementedError

    def wait_stopped(self, timeout: float = 120) -> None:
        """Wait for the guest to power itself off; ``start`` then boots the same disk."""
        raise NotImplementedError

    # A shell command whose output changes with every boot of the guest.
    BOOT_ID_COMMAND = "cat /proc/sys/kernel/random/boot_id"

    def boot_id(self) -> str:
        return self.ssh(self.BOOT_ID_COMMAND).stdout.strip()

    # --- timings -------------------------------------------------------------------

    def _allocate_ports(self) -> None:
        for guest_port in (*FORWARDED_PORTS, *self.extra_ports):
            self.ports.setdefault(guest_port, free_port())

    def _power_on(self) -> None:
        """Start the clock all timings count from."""
        self.close_ssh()
        self._power_ons += 1
        self._started = time.monotonic()

    def _ssh_pause(self, attempt_started: float) -> float:
        """Seconds to wait after a failed attempt to connect. After the first
        boot the firewall is up from early in a boot and rate-limits SSH (6
        new connections in 30 s), refused attempts included: the guest is
        tried at the pace ``bakery status`` keeps. Under QEMU's user network
        an attempt the guest does not answer hangs while QEMU retries it, and
        an attempt every 6.5 s kept the address refused for good."""
        if self._power_ons <= 1 and not self.booted_before:
            return 2.0
        now = time.monotonic()
        return max(0.0, next_poll(attempt_started, now, answered=False, interval=0) - now)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def mark(self, phase: str) -> float:
        """Record when ``phase`` was reached, in seconds since power-on."""
        self.timings[phase] = round(self.elapsed(), 1)
        return self.timings[phase]

    def _check_alive(self) -> None:
        if not self.running:
            raise GuestError(f"the guest stopped; console tail:\n{self.console_tail()}")
        if self._panicked():
            raise GuestPanic(f"the guest's kernel panicked; console tail:\n{self.console_tail()}")

    def _panicked(self) -> bool:
        """Whether the console shows a kernel panic among what it printed
        since the last look (only that is read)."""
        try:
            with open(self.console_log, "rb") as console:
                size = console.seek(0, 2)
                console.seek(max(0, min(self._console_seen, size) - len(PANIC)))
                printed = console.read()
        except OSError:
            return False
        self._console_seen = size
        return PANIC in printed

    # --- SSH -----------------------------------------------------------------

    @property
    def _ssh_control_dir(self) -> Path:
        # A socket path must stay under 108 bytes: not in the deep workdir.
        if self._control_dir is None:
            self._control_dir = Path(tempfile.mkdtemp(prefix="bakery-ssh-"))
        return self._control_dir

    def ssh_command(self, user: str | None = None, *, shared: bool = True) -> list[str]:
        """The ssh command line for ``user`` (default: the guest's admin);
        ``shared=False`` opens a connection of its own."""
        sharing = [*SSH_SHARING, "-o", f"ControlPath={self._ssh_control_dir}/%C"] if shared else []
        return ["ssh", *SSH_OPTIONS, *sharing, "-i", str(self.ssh_key), "-p", str(self.ports[22]),
                f"{user or self.user}@127.0.0.1"]

    def close_ssh(self) -> None:
        """End the shared connections: after a reboot or a power cut they lead nowhere."""
        control_dir = self._control_dir
        if control_dir is None:
            return
        for socket_path in control_dir.glob("*"):
            subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "guest"],
                           capture_output=True, timeout=30)
        shutil.rmtree(control_dir, ignore_errors=True)
        self._control_dir = None

    def ssh(self, command: str, *, user: str | None = None, check: bool = True,
            timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``command`` in the guest through a login-less SSH session."""
        result = subprocess.run(
            [*self.ssh_command(user), command],
            capture_output=True, text=True, timeout=timeout, input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise GuestError(
                f"guest command failed ({result.returncode}): {command}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def _wait(self, probe, what: str, timeout: float, interval: float | Callable[[float], float] = 2.0) -> None:
        """Until ``probe()`` is true: ``interval`` seconds between attempts, or
        ``interval(when the attempt started)``."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            attempt_started = time.monotonic()
            try:
                if probe():
                    return
            except (OSError, subprocess.TimeoutExpired, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise GuestError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval(attempt_started) if callable(interval) else interval)

    def _ssh_ok(self, command: str) -> bool:
        return self.ssh(command, check=False, timeout=30).returncode == 0

    def wait_ssh(self, timeout: float = 300) -> float:
        self._wait(lambda: self._ssh_ok("true"), "SSH", timeout, self._ssh_pause)
        return self.mark("ssh")

    def wait_boot_finished(self, timeout: float = 1200) -> float:
        # Not `cloud-init status --wait`: it returns on the first recorded
        # error while later modules are still running.
        self._wait(lambda: self._ssh_ok(f"test -e {BOOT_FINISHED}"), "cloud-init to finish", timeout, 5)
        return self.mark("boot-finished")

    def first_boot_status(self) -> str:
        return self.ssh(f"sudo -n cat {FIRST_BOOT_STATUS}", check=False, timeout=30).stdout.strip()

    def wait_first_boot(self, timeout: float = 1200) -> str:
        """Wait for bakery's verdict on this boot ("ready" or "failed STEP"),
        written since this boot began, and for cloud-init to finish after it;
        returns the verdict."""
        status = FIRST_BOOT_STATUS
        self._wait(lambda: self._ssh_ok(
            f"grep -qE '^(ready|failed )' {status} && "
            f"[ \"$(stat -c %Y {status})\" -ge $(($(date +%s) - $(ps -o etimes= -p 1))) ] && "
            f"test {BOOT_FINISHED} -nt {status}"),
            "bakery's first boot and cloud-init to finish", timeout, 5)
        self.mark("first-boot")
        return self.first_boot_status()

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

    def reboot(self, timeout: float = 300) -> float:
        """Reboot from inside the guest and wait until SSH answers from the new boot."""
        before = self.boot_id()
        started = time.monotonic()
        self.ssh("sudo -n systemctl reboot", check=False, timeout=30)
        self.close_ssh()
        self._power_ons += 1
        self._wait(lambda: self._ssh_ok(f'test "$({self.BOOT_ID_COMMAND})" != {before}'),
                   "SSH after reboot", timeout, self._ssh_pause)
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
        print(f"===== console tail: {self.console_log} =====", file=out)
        print(self.console_tail(), file=out)
