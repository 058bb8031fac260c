"""Kernel and login hardening (host.hardening), the settings of the CIS
benchmarks and lynis that cost a server nothing it needs: kernel
parameters, no core dumps, unused kernel modules off, a login banner, idle
shells logged out, password quality, per-user temporary folders, and
services restarted after a security update replaced their libraries.

What it leaves alone, on purpose: password ageing (an expired password of a
key-only user would lock them out), AllowUsers (users added later could not
log in), a separate /tmp or /var (the provider's disk layout), file
integrity and malware scanners (noise a small server's owner won't read).

The files are the same on every server (baked into images); the first-boot
step `harden` applies the kernel parameters at once (the next boots load
them by themselves) and sets the password hashing cost in login.defs."""

from __future__ import annotations

from ..targets import SD_IMAGE

SYSCTL_FILE = "/etc/sysctl.d/60-bakery-hardening.conf"

# Each is what lynis's scan profile and the CIS benchmarks ask for. Reverse
# path filtering stays the distribution's loose mode: strict breaks
# servers with more than one network.
SYSCTL = {
    "dev.tty.ldisc_autoload": 0,
    "fs.protected_fifos": 2,
    "fs.protected_hardlinks": 1,
    "fs.protected_regular": 2,
    "fs.protected_symlinks": 1,
    "fs.suid_dumpable": 0,
    "kernel.core_uses_pid": 1,
    "kernel.ctrl-alt-del": 0,
    "kernel.dmesg_restrict": 1,
    "kernel.kptr_restrict": 2,
    "kernel.perf_event_paranoid": 3,
    "kernel.unprivileged_bpf_disabled": 1,
    "kernel.yama.ptrace_scope": 1,
    "net.core.bpf_jit_harden": 2,
    "net.ipv4.conf.all.accept_redirects": 0,
    "net.ipv4.conf.default.accept_redirects": 0,
    "net.ipv4.conf.all.secure_redirects": 0,
    "net.ipv4.conf.default.secure_redirects": 0,
    "net.ipv4.conf.all.send_redirects": 0,
    "net.ipv4.conf.default.send_redirects": 0,
    "net.ipv4.conf.all.accept_source_route": 0,
    "net.ipv4.conf.default.accept_source_route": 0,
    "net.ipv4.conf.all.log_martians": 1,
    "net.ipv4.conf.default.log_martians": 1,
    "net.ipv6.conf.all.accept_redirects": 0,
    "net.ipv6.conf.default.accept_redirects": 0,
    "net.ipv6.conf.all.accept_source_route": 0,
    "net.ipv6.conf.default.accept_source_route": 0,
}

# Kernel modules a server never needs; loading one runs /bin/false instead.
UNUSED_MODULES = ("dccp", "sctp", "rds", "tipc", "firewire-core", "usb-storage")

BANNER = ("Authorized access only. Activity on this system is monitored and logged;\n"
          "unauthorized use is prohibited.\n")

IDLE_LOGOUT_SECONDS = 900

# SHA_CRYPT_{MIN,MAX}_ROUNDS in /etc/login.defs (the harden step sets them).
PASSWORD_HASH_ROUNDS = 65536

# needrestart restarts what still runs old libraries after an update
# (unattended-upgrades included); libpam-tmpdir gives each user a private
# $TMPDIR; passwdqc refuses weak passwords; debsums checks installed files
# against their packages; acct records which commands ran (lastcomm), for
# the day something went wrong.
PACKAGES = ["needrestart", "libpam-tmpdir", "libpam-passwdqc", "debsums", "acct"]


def package_list(plan) -> list:
    return list(PACKAGES) if plan.hardening else []


def unused_modules(plan) -> tuple:
    """A Raspberry Pi boots from and stores on USB drives: USB storage stays."""
    if plan.target.can(SD_IMAGE):
        return tuple(name for name in UNUSED_MODULES if name != "usb-storage")
    return UNUSED_MODULES


def _file(path: str, content: str) -> dict:
    return {"path": path, "owner": "root:root", "permissions": "0644", "content": content}


def build(plan) -> dict:
    if not (plan.shared and plan.hardening):
        return {}
    files = [
        _file(SYSCTL_FILE, "# Written by bakery: kernel hardening.\n"
              + "".join(f"{key} = {value}\n" for key, value in SYSCTL.items())),
        _file("/etc/modprobe.d/60-bakery-hardening.conf", "# Written by bakery: modules this server never needs.\n"
              + "".join(f"install {name} /bin/false\n" for name in unused_modules(plan))),
        # No core dumps: they can hold secrets (keys, the .env) from memory.
        _file("/etc/security/limits.d/60-bakery-hardening.conf", "* hard core 0\n* soft core 0\n"),
        _file("/etc/systemd/coredump.conf.d/60-bakery-hardening.conf", "[Coredump]\nStorage=none\nProcessSizeMax=0\n"),
        _file("/etc/profile.d/60-bakery-hardening.sh",
              "# Written by bakery: no core dumps; an idle shell is logged out.\n"
              f"ulimit -c 0\nTMOUT={IDLE_LOGOUT_SECONDS}\nreadonly TMOUT\nexport TMOUT\n"),
        _file("/etc/issue", BANNER),
        _file("/etc/issue.net", BANNER),
        # Unattended upgrades restart what they updated, without asking.
        _file("/etc/needrestart/conf.d/60-bakery.conf", "$nrconf{restart} = 'a';\n"),
    ]
    return {"write_files": files}
