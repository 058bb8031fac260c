"""The workstation's SSH to a server, for commands that only read from it
(``bakery status``): the system ``ssh`` client in batch mode, one connection
opened once and reused for every command (an OpenSSH ControlMaster), and host
keys checked against bakery's own known_hosts file, where the key of a server
never met before is pinned on first contact and reported. A key that differs
from the pinned one (or from the user's own known_hosts) stops everything."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from .errors import BakeryError, UsageError

CONNECT_TIMEOUT = 10
# A server that vanishes (power cut) is noticed by the kept connection in
# ServerAliveInterval x ServerAliveCountMax seconds.
ALIVE = ("-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3")
# How long the kept connection outlives bakery when bakery is killed.
PERSIST_SECONDS = 60
KEY_CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")


class HostKeyError(BakeryError):
    """The server's host key is not the one known for it."""


def known_hosts_file(environ: Mapping[str, str] = os.environ) -> Path:
    """bakery's own known_hosts: ``$XDG_CONFIG_HOME/bakery/known_hosts``."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "bakery" / "known_hosts"


@dataclass(frozen=True)
class Destination:
    """Who logs in where: ``[USER@]HOST`` with the port and key to use."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    identity: Optional[Path] = None

    @classmethod
    def parse(cls, text: str, default_user: Optional[str] = None, port: Optional[int] = None,
              identity: Optional[Path] = None) -> "Destination":
        user, _, host = text.rpartition("@")
        if not host or host.startswith("-") or not re.fullmatch(r"[^\s@/]+", host) \
                or (user and not re.fullmatch(r"[A-Za-z0-9._][A-Za-z0-9._-]*", user)):
            raise UsageError(f"expected [USER@]HOST, got {text!r}")
        return cls(host, user or default_user, port, identity)

    def options(self, login: bool = True) -> list[str]:
        out = []
        if self.user and login:
            out += ["-l", self.user]
        if self.port:
            out += ["-p", str(self.port)]
        if self.identity:
            out += ["-i", str(self.identity)] + (["-o", "IdentitiesOnly=yes"] if login else [])
        return out

    def __str__(self) -> str:
        where = f"{self.user}@{self.host}" if self.user else self.host
        return f"{where}:{self.port}" if self.port else where

    def command_line(self, command: str) -> str:
        """The ssh command a person types to run ``command`` there."""
        where = f"{self.user}@{self.host}" if self.user else self.host
        return shlex.join(["ssh", *self.options(login=False), where, *shlex.split(command)])


@dataclass
class Answer:
    """What one remote command gave: its output, or why SSH did not get there."""

    ok: bool
    code: int = 255  # ssh's exit status: 255 when SSH itself failed
    stdout: str = ""
    stderr: str = ""
    reason: str = ""  # one line: why it failed


class Connection:
    """SSH to one server: ``run`` a shell script there and read what it prints.

    The first command opens the connection, later ones reuse it. Used as a
    context manager, which closes the connection and its private folder.
    ``ssh_seconds`` adds up the time spent waiting for ssh.
    """

    def __init__(self, destination: Destination, known_hosts: Path):
        if not shutil.which("ssh"):
            raise BakeryError("ssh is not installed here (the OpenSSH client: apt install openssh-client)")
        self.destination = destination
        self.known_hosts = known_hosts
        self.ssh_seconds = 0.0
        self._folder = tempfile.mkdtemp(prefix="bakery-ssh-")
        self._effective = self._ssh_config()
        self._key_name = self._host_key_name()
        self._pinned_before = self._known_line() is not None

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _options(self) -> list[str]:
        known = " ".join(f'"{path}"' if re.search(r"\s", path) else path
                         for path in [str(self.known_hosts), *self._user_known_hosts()])
        return [
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", *ALIVE,
            # New keys go into the first file only, bakery's; the user's own
            # files are still checked, never written.
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "UpdateHostKeys=no", "-o", "LogLevel=ERROR",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self._folder}/master",
            "-o", f"ControlPersist={PERSIST_SECONDS}",
            *self.destination.options(),
        ]

    def _user_known_hosts(self) -> list[str]:
        return self._effective.get("userknownhostsfile", "").split()

    def _ssh_config(self) -> dict[str, str]:
        """What ssh makes of the destination with the user's ssh_config (``ssh -G``)."""
        result = subprocess.run(["ssh", "-G", *self.destination.options(), self.destination.host],
                                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
        if result.returncode != 0:
            raise UsageError(f"ssh cannot use {self.destination}: {last_line(result.stderr)}")
        effective: dict[str, str] = {}
        for line in result.stdout.splitlines():
            key, _, value = line.partition(" ")
            effective.setdefault(key, value)
        return effective

    def _host_key_name(self) -> str:
        """The name ssh files the host's key under: ``host`` or ``[host]:port``."""
        name = self._effective.get("hostkeyalias") or self._effective.get("hostname") or self.destination.host
        port = self._effective.get("port", "22")
        return name if port == "22" else f"[{name}]:{port}"

    def _known_line(self) -> Optional[str]:
        """``NAME TYPE SHA256:...`` when bakery's file holds the host's key."""
        if not self.known_hosts.exists():
            return None
        result = subprocess.run(["ssh-keygen", "-l", "-F", self._key_name, "-f", str(self.known_hosts)],
                                capture_output=True, text=True, stdin=subprocess.DEVNULL)
        lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
        return lines[0] if result.returncode == 0 and lines else None

    def pinned_now(self) -> Optional[str]:
        """Once the first command has run: the key's fingerprint when this
        connection pinned it (it was not in bakery's file before), else None."""
        if self._pinned_before:
            return None
        line = self._known_line()
        self._pinned_before = True
        if line is None:
            return None
        _, _, fingerprint = line.partition(" ")
        return fingerprint

    def run(self, command: str, script: str, timeout: float = CONNECT_TIMEOUT + 50) -> Answer:
        """Run ``command`` there with ``script`` on its standard input."""
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            result = subprocess.run(["ssh", *self._options(), self.destination.host, command], input=script,
                                    capture_output=True, text=True, errors="surrogateescape", timeout=timeout)
        except subprocess.TimeoutExpired:
            # A kept connection to a server that went away: start afresh.
            self._stop_master()
            return Answer(False, reason=f"no answer in {timeout:.0f}s")
        finally:
            self.ssh_seconds += time.monotonic() - started
        if result.returncode == 255:
            if any(sign in result.stderr for sign in KEY_CHANGED):
                raise HostKeyError(self._key_changed(result.stderr))
            return Answer(False, 255, result.stdout, result.stderr, last_line(result.stderr) or "ssh failed")
        return Answer(result.returncode == 0, result.returncode, result.stdout, result.stderr,
                      "" if result.returncode == 0 else last_line(result.stderr) or f"exit {result.returncode}")

    def _key_changed(self, stderr: str) -> str:
        offending = re.search(r"Offending \S+ key in (\S+):(\d+)", stderr)
        where = offending.group(1) if offending else str(self.known_hosts)
        told = re.search(r"The fingerprint for the (\S+) key sent by the remote host is\s+(\S+?)\.?$", stderr, re.M)
        sent = f" (it sends {told.group(1)} {told.group(2)})" if told else ""
        return (f"the host key of {self.destination.host} is not the one known for it in {where}{sent}. "
                "If the server was rebuilt (a new server has new host keys), check the new key against the "
                "fingerprints on its console, then forget the old one: "
                f"{shlex.join(['ssh-keygen', '-R', self._key_name, '-f', where])}. "
                "Otherwise someone may be in the middle of the connection: stop here.")

    def _stop_master(self) -> None:
        subprocess.run(["ssh", "-o", f"ControlPath={self._folder}/master", "-O", "exit", self.destination.host],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=30)

    def close(self) -> None:
        if os.path.exists(f"{self._folder}/master"):
            self._stop_master()
        shutil.rmtree(self._folder, ignore_errors=True)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("ssh: ") if lines else ""
