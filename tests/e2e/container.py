"""A throwaway systemd-nspawn guest for the end-to-end tests: the fast tier.

Owns how one container runs: the cached base image's root filesystem tree
(never written to) with a throwaway overlay on top, the NoCloud seed (taken from the same ISO the VM
boots) in ``/var/lib/cloud/seed/nocloud/``, a private network namespace wired
by slirp4netns the way QEMU's user networking is wired (the host is 10.0.2.2,
DNS is 10.0.2.3, forwards bound to 127.0.0.1 on free ports), and the console
in a log file. What the tests do with a guest lives in ``guest.py``.

Everything is made inside one ``unshare --mount --net`` process: the overlay
mount and the network namespace vanish with it, so a killed run leaves nothing
mounted on the host. The container runs on the host's kernel, so it is a fast
check of the configuration, not the test of record; it never shares the host's
network namespace, where ufw, sshd and cloud-init would act on the host.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .guest import Guest, GuestError

SEED_DIR = "var/lib/cloud/seed/nocloud"
SEED_FILES = ("user-data", "meta-data", "network-config", "vendor-data")
# slirp4netns, like QEMU's user network: the guest is 10.0.2.100, DNS 10.0.2.3.
GUEST_ADDRESS = "10.0.2.100"
GUEST_FILES = {
    "etc/resolv.conf": "nameserver 10.0.2.3\n",
    # The network exists before boot, as a provider's does; cloud-init must
    # not replace it with its DHCP fallback on an eth0 the container lacks.
    "etc/cloud/cloud.cfg.d/99-e2e-container-network.cfg": "network: {config: disabled}\n",
}

# Runs inside the new mount and network namespaces: $1 the image's root
# filesystem tree, $2 upper, $3 overlay work dir, $4 root, $5 machine name.
BOOT_SCRIPT = r"""
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
# slirp4netns joins this network namespace from outside and brings up tap0.
tries=0
until ip -4 -o addr show dev tap0 2>/dev/null | grep -q inet; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then echo "tap0 never came up" >&2; exit 1; fi
    sleep 0.1
done
while :; do
    status=0
    systemd-nspawn --quiet --boot --directory="$4" --machine="$5" \
        --register=no --keep-unit --link-journal=no --resolv-conf=off \
        --network-namespace-path="/proc/$$/ns/net" \
        --capability=CAP_NET_ADMIN --console=read-only || status=$?
    # 133: the container asked for a reboot; boot it again on the same overlay.
    [ "$status" -eq 133 ] || exit "$status"
done
"""


def seed_files(iso: Path) -> dict[str, bytes]:
    """The NoCloud files on a seed ISO, read with pycdlib as bakery writes them."""
    import pycdlib  # bakery's own ISO library, imported only when a container boots

    seed = pycdlib.PyCdlib()
    seed.open(str(iso))
    try:
        files = {}
        for name in SEED_FILES:
            data = io.BytesIO()
            try:
                seed.get_file_from_iso_fp(data, rr_path=f"/{name}")
            except pycdlib.pycdlibexception.PyCdlibInvalidInput:
                continue
            files[name] = data.getvalue()
        return files
    finally:
        seed.close()


def _slirp_request(socket_path: Path, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(str(socket_path))
        connection.sendall(json.dumps(request).encode())
        connection.shutdown(socket.SHUT_WR)
        reply = json.loads(connection.recv(65536) or b"{}")
    if "error" in reply or "return" not in reply:
        raise GuestError(f"slirp4netns refused {request}: {reply}")
    return reply


@dataclass
class Container(Guest):
    accel: str = "nspawn"
    _process: subprocess.Popen | None = None
    _slirp: subprocess.Popen | None = None

    # The kernel's boot id is the host's; the container's init start time
    # (field 22 of /proc/1/stat) changes with every boot of the container.
    BOOT_ID_COMMAND = "cut -d' ' -f22 /proc/1/stat"

    def start(self) -> None:
        """Power on: a fresh overlay the first time; after ``cut_power`` the
        same one, as a disk keeps what was written to it."""
        layers = {name: self.workdir / name for name in ("upper", "overlay-work", "root")}
        # overlayfs's own scratch folder, left in any state by a killed container.
        shutil.rmtree(layers["overlay-work"], ignore_errors=True)
        upper = layers["upper"]
        fresh = not upper.exists()
        for path in layers.values():
            path.mkdir(exist_ok=True)
        if fresh:
            for relative, text in GUEST_FILES.items():
                (upper / relative).parent.mkdir(parents=True, exist_ok=True)
                (upper / relative).write_text(text)
        # The seed as a CD holds it: replaced when the guest is given a new one.
        seed_dir = upper / SEED_DIR
        shutil.rmtree(seed_dir, ignore_errors=True)
        seed_dir.mkdir(parents=True)
        for name, data in seed_files(self.seed).items():
            (seed_dir / name).write_bytes(data)

        self._allocate_ports()
        machine = "bakery-" + "".join(c if c.isalnum() else "-" for c in self.workdir.name)[-40:]
        command = ["unshare", "--mount", "--net", "--propagation", "private",
                   "sh", "-ec", BOOT_SCRIPT, "boot", str(self.image.rootfs),
                   *(str(path) for path in layers.values()), machine]
        self._power_on()
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, start_new_session=True,
            stdout=open(self.console_log, "ab"), stderr=subprocess.STDOUT,
        )
        self._wait_for_own_network_namespace()
        api = self.workdir / "slirp.sock"
        api.unlink(missing_ok=True)  # left by the slirp4netns of a previous power-on
        self._slirp = subprocess.Popen(
            ["slirp4netns", "--configure", "--mtu=65520", f"--api-socket={api}",
             str(self._process.pid), "tap0"],
            stdin=subprocess.DEVNULL, stdout=open(self.workdir / "slirp.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        self._forward_ports(api)

    def _wait_for_own_network_namespace(self, timeout: float = 10) -> None:
        """Wait until ``unshare`` has left the host's network namespace: a
        slirp4netns started earlier would put tap0, and then the guest's
        network, on the host."""
        host = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.readlink(f"/proc/{self._process.pid}/ns/net") != host:
                    return
            except FileNotFoundError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise GuestError(f"no private network namespace for the container:\n{self.console_tail()}")
            time.sleep(0.01)

    def _forward_ports(self, api: Path, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not api.exists():
            if self._slirp.poll() is not None or time.monotonic() > deadline:
                raise GuestError(f"slirp4netns did not start: {(self.workdir / 'slirp.log').read_text()}")
            time.sleep(0.05)
        for guest_port, host_port in self.ports.items():
            _slirp_request(api, {"execute": "add_hostfwd", "arguments": {
                "proto": "tcp", "host_addr": "127.0.0.1", "host_port": host_port,
                "guest_addr": GUEST_ADDRESS, "guest_port": guest_port}})

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _container_init(self) -> int | None:
        """The host pid of the container's PID 1 (a descendant of our process
        whose innermost pid is 1)."""
        children: dict[int, list[int]] = {}
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            except OSError:
                continue
            children.setdefault(int(fields["PPid"]), []).append(int(status.parent.name))
            if fields.get("NSpid", "").split()[-1:] == ["1"] and len(fields["NSpid"].split()) > 1:
                candidate = int(status.parent.name)
                children.setdefault(-1, []).append(candidate)
        descendants, queue = set(), [self._process.pid]
        while queue:
            pid = queue.pop()
            for child in children.get(pid, []):
                if child not in descendants:
                    descendants.add(child)
                    queue.append(child)
        inits = [pid for pid in children.get(-1, []) if pid in descendants]
        return inits[0] if inits else None

    def wait_stopped(self, timeout: float = 120) -> None:
        self._process.wait(timeout=timeout)
        self._process = None
        self._stop_slirp()

    def _stop_slirp(self) -> None:
        if self._slirp is not None:
            self._slirp.terminate()
            self._slirp.wait()
            self._slirp = None

    def cut_power(self) -> None:
        """Kill the container's PID 1 with SIGKILL, which kills every process
        in it at once: no shutdown, nothing more is written. (The host's page
        cache keeps what the container wrote; the VM tier loses it.)"""
        init = self._container_init()
        if init is None:
            raise GuestError("no container init to kill")
        os.kill(init, signal.SIGKILL)
        self.close_ssh()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None
        self._stop_slirp()

    def stop(self, timeout: float = 60) -> None:
        """Power off cleanly if the guest answers; else ask systemd-nspawn to
        shut the container down (SIGTERM), then kill what is left."""
        if self._process is not None:
            if self._process.poll() is None:
                self.ssh("sudo -n systemctl poweroff", check=False, timeout=15)
            for signal_number, wait in ((None, timeout), (signal.SIGTERM, 30), (signal.SIGKILL, 30)):
                if self._process.poll() is not None:
                    break
                if signal_number is not None:
                    try:
                        os.killpg(self._process.pid, signal_number)
                    except ProcessLookupError:
                        break
                try:
                    self._process.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    pass
            self._process = None
        self._stop_slirp()
        self.close_ssh()
        # The overlay holds every package the guest installed: hundreds of MB.
        for name in ("upper", "overlay-work"):
            shutil.rmtree(self.workdir / name, ignore_errors=True)
