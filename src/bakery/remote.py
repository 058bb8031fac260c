"""Reading from a server over SSH, from the workstation: one read-only
command run as the server's admin with the system's ``ssh`` client, in batch
mode (never a prompt). Host keys are checked against bakery's own
known_hosts (``~/.config/bakery/known_hosts``): a server met for the first
time has its key pinned there, and bakery says so with the key's
fingerprint; a key that differs from the pinned one is refused."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from .errors import BakeryError, UsageError

CONNECT_TIMEOUT = 15
COMMAND_TIMEOUT = 120
KEY_CHANGED = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")
_HOST = re.compile(r"[A-Za-z0-9._:\[\]%-]+")
# Key types as ssh-keygen -l and the server's console name them.
_KEY_TYPES = (("ssh-ed25519", "ED25519"), ("ecdsa-", "ECDSA"), ("ssh-rsa", "RSA"), ("sk-ssh-ed25519", "ED25519-SK"),
              ("sk-ecdsa-", "ECDSA-SK"))
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")


class HostKeyError(BakeryError):
    """The server's host key is not the one pinned for it."""


class RemoteCommandError(BakeryError):
    """The command ran on the server and failed; ``stderr`` says why."""

    def __init__(self, message: str, stderr: str):
        super().__init__(message)
        self.stderr = stderr


def known_hosts_file(environ: Mapping[str, str] = os.environ) -> Path:
    """bakery's own known_hosts: ``$XDG_CONFIG_HOME/bakery/known_hosts``."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "bakery" / "known_hosts"


@dataclass(frozen=True)
class Destination:
    """Who logs in where: ``[USER@]HOST``, with the port and key to use."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    identity: Optional[Path] = None

    @classmethod
    def parse(cls, text: str, default_user: Optional[str] = None, port: Optional[int] = None,
              identity: Optional[Path] = None) -> "Destination":
        user, _, host = text.rpartition("@")
        # Never an option for ssh: a host may not start with "-".
        if not _HOST.fullmatch(host) or host.startswith("-") or (user and not _USER.fullmatch(user)):
            raise UsageError(f"expected [USER@]HOST (e.g. admin@203.0.113.7 or web.example.com), got {text!r}")
        return cls(host, user or default_user, port, identity)

    def options(self) -> list:
        out = ["-l", self.user] if self.user else []
        if self.port:
            out += ["-p", str(self.port)]
        if self.identity:
            out += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return out

    def __str__(self) -> str:
        where = f"{self.user}@{self.host}" if self.user else self.host
        return f"{where} (port {self.port})" if self.port else where


def fingerprint(known_hosts_line: str) -> str:
    """``TYPE SHA256:...`` of a known_hosts line, as ssh-keygen -l shows it."""
    fields = known_hosts_line.split()
    blob = base64.b64decode(fields[2])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    kind = next((name for prefix, name in _KEY_TYPES if fields[1].startswith(prefix)), fields[1])
    return f"{kind} SHA256:{digest}"


def run(destination: Destination, command: str, *, known_hosts: Optional[Path] = None,
        say: Callable[[str], None] = lambda message: None) -> str:
    """Run ``command`` on the server and return what it printed. A key pinned
    now is told through ``say``; a changed key raises HostKeyError, an SSH
    failure BakeryError, a failed command RemoteCommandError."""
    if not shutil.which("ssh"):
        raise BakeryError("ssh is not installed here (the OpenSSH client: apt install openssh-client)")
    known_hosts = known_hosts or known_hosts_file()
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    before = _lines(known_hosts)
    options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
               # Only bakery's file: a key is pinned there, never in the user's.
               "-o", f"UserKnownHostsFile={_config_word(str(known_hosts))}",
               "-o", "StrictHostKeyChecking=accept-new", "-o", "HashKnownHosts=no", "-o", "UpdateHostKeys=no",
               "-o", "LogLevel=ERROR", *destination.options()]
    try:
        result = subprocess.run(["ssh", *options, "--", destination.host, command], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BakeryError(f"no answer from {destination} in {COMMAND_TIMEOUT} seconds") from None
    for line in _lines(known_hosts)[len(before):]:
        say(f"first contact with {destination.host}: pinned its host key {fingerprint(line)} in {known_hosts} "
            "(compare it with the fingerprints on the server's console); a different key will be refused")
    if result.returncode == 255:
        if any(sign in result.stderr for sign in KEY_CHANGED):
            raise HostKeyError(_key_changed(destination, known_hosts))
        raise BakeryError(f"ssh to {destination} failed: {_last_line(result.stderr) or 'exit 255'}")
    if result.returncode != 0:
        raise RemoteCommandError(f"{command!r} failed on {destination}: {_last_line(result.stderr)}", result.stderr)
    return result.stdout


def _config_word(text: str) -> str:
    """One word of an ssh option's value (ssh splits it at spaces)."""
    return f'"{text}"' if re.search(r"\s", text) else text


def _lines(path: Path) -> list:
    try:
        return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


def _key_changed(destination: Destination, known_hosts: Path) -> str:
    name = destination.host if not destination.port or destination.port == 22 \
        else f"[{destination.host}]:{destination.port}"
    return (f"the host key of {destination.host} is not the one pinned for it in {known_hosts}: refusing to "
            "connect. If the server was rebuilt (a new server has new host keys), check its new key against the "
            f"fingerprints on its console, then forget the old one: ssh-keygen -R '{name}' -f {known_hosts}. "
            "Otherwise someone may be in the middle of the connection.")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
