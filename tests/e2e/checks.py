"""Checks the booted scenarios make from outside the guest: logins refused,
the firewall's open ports, what listens beyond loopback, cloud-init's result,
bakery's first-boot verdict, and supervisor bringing a killed gunicorn back."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

from .guest import wait_for


def assert_root_login_refused(server) -> None:
    result = server.ssh("whoami", user="root", check=False, timeout=60)
    assert result.returncode != 0
    assert "root" not in result.stdout


def assert_password_login_refused(server, user: str) -> None:
    result = subprocess.run(
        ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         "-o", "PreferredAuthentications=password,keyboard-interactive",
         "-o", "PubkeyAuthentication=no", "-p", str(server.ports[22]),
         f"{user}@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    # The server offers public keys only.
    assert "Permission denied (publickey)" in result.stderr, result.stderr


def assert_firewall_allows_exactly(server, rules: set, limited: frozenset = frozenset({"22/tcp"})) -> None:
    """ufw is on, lets in exactly ``rules`` and rate-limits ``limited`` of them."""
    status = server.ssh("sudo -n ufw status").stdout
    assert "Status: active" in status, status
    actions: dict = {}
    for line in status.splitlines():
        fields = line.replace(" (v6)", "").split()
        if len(fields) >= 2 and fields[1] in ("ALLOW", "LIMIT"):
            actions.setdefault(fields[0], set()).add(fields[1])
    assert set(actions) == rules, status
    assert {rule for rule, seen in actions.items() if seen == {"LIMIT"}} == limited, status
    assert "deny (incoming)" in server.ssh("sudo -n ufw status verbose").stdout


def ssh_banner_answers(server) -> bool:
    """One new TCP connection to the guest's SSH port: True when sshd's
    banner comes back, False when the connection is refused or closed."""
    try:
        # A refused connection may hang in the port forward: a short timeout.
        with socket.create_connection(("127.0.0.1", server.ports[22]), timeout=3) as connection:
            return connection.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def send_tree(guest, local: Path, remote: str) -> None:
    """Copy the folder ``local`` to ``remote`` in the guest, over the shared SSH connection."""
    archive = subprocess.run(["tar", "-C", str(local), "-cz", "--exclude=__pycache__", "."],
                             capture_output=True, check=True).stdout
    subprocess.run([*guest.ssh_command(), f"mkdir -p {shlex.quote(remote)} && tar -C {shlex.quote(remote)} -xz"],
                   input=archive, check=True, timeout=120)


def assert_cloud_init_done(server, timeout: float = 300) -> None:
    # After a reboot nginx and the app serve before cloud-init's last stage
    # (After=multi-user.target) has ended: it is waited for, then judged.
    status = server.ssh("cloud-init status --long", check=False)
    deadline = time.monotonic() + timeout
    while "status: running" in status.stdout and time.monotonic() < deadline:
        time.sleep(5)
        status = server.ssh("cloud-init status --long", check=False)
    assert "status: done" in status.stdout, status.stdout + status.stderr
    result = json.loads(server.ssh("cat /run/cloud-init/result.json").stdout)
    assert result["v1"]["errors"] == [], result


def first_boot_state(server) -> str:
    return server.first_boot_status()


def listening_beyond_loopback(server) -> set:
    """(address, port) of every TCP listener not bound to a loopback address."""
    found = set()
    for line in server.ssh("sudo -n ss -Hltn").stdout.splitlines():
        address, _, port = line.split()[3].rpartition(":")
        if address.strip("[]").split("%")[0] not in ("127.0.0.1", "::1") and not address.startswith("127."):
            found.add((address, int(port)))
    return found


def assert_listening_only_on_loopback_but(server, ports: set) -> None:
    beyond = listening_beyond_loopback(server)
    assert {port for _, port in beyond} <= ports, server.ssh("sudo -n ss -Hltnp").stdout


def gunicorn_master(server, program: str) -> int:
    return int(server.ssh(f"sudo -n supervisorctl pid {program}").stdout.strip())


def served_by_current_master(server, program: str, port: int) -> bool:
    """True when the app's port is held only by supervisor's current gunicorn
    master and its workers.

    Workers of a master killed with SIGKILL live on (re-parented) and keep the
    listening socket, and serving, until they notice, which takes gunicorn up
    to half its worker timeout; the new master only gets the port after that.
    """
    master = gunicorn_master(server, program)
    if master == 0:
        return False
    listeners = server.ssh(f"sudo -n ss -Hltnp 'sport = :{port}'").stdout
    holders = {int(pid) for pid in re.findall(r"pid=(\d+)", listeners)}
    workers = {int(pid) for pid in server.ssh(f"pgrep -P {master}", check=False).stdout.split()}
    return bool(holders) and master in holders and holders <= {master} | workers


def assert_supervisor_restarts_killed_gunicorn(server, program: str, port: int, page_ok) -> float:
    """Kill the gunicorn master with SIGKILL; supervisor must start a new one
    that takes over the port and serves. Returns the seconds the takeover took."""
    before = gunicorn_master(server, program)
    started = time.monotonic()
    server.ssh(f"sudo -n kill -9 {before}")
    assert wait_for(lambda: gunicorn_master(server, program) not in (0, before), timeout=30), \
        "gunicorn not restarted"
    assert wait_for(lambda: served_by_current_master(server, program, port), timeout=60, interval=1), \
        server.ssh(f"sudo -n ss -Hltnp 'sport = :{port}'; ps -ef | grep [g]unicorn", check=False).stdout
    assert wait_for(page_ok, timeout=30)
    return round(time.monotonic() - started, 1)


def assert_app_process_is_isolated(server, program: str, app_dir: str) -> None:
    """The processes that serve HTTP: not root, not the code's owner, not in
    sudo; they cannot change their code or venv, nor read /etc/bakery."""
    master = gunicorn_master(server, program)
    workers = server.ssh(f"pgrep -P {master}", check=False).stdout.split()
    assert master and workers, (master, workers)
    users = set(server.ssh(f"ps -o user:32= -p {','.join([str(master), *workers])}").stdout.split())
    assert users == {f"{program}-web"}, users
    user = users.pop()
    owner = server.ssh(f"sudo -n stat -c %U {app_dir}").stdout.strip()
    assert owner == program and owner != user
    groups = set(server.ssh(f"id -nG {user}").stdout.split())
    assert not groups & {"sudo", "adm", "wheel", "root"}, groups
    # Listed by root: Debian 12's sudo asks even a NOPASSWD admin for a password for -l -U.
    sudo = server.ssh(f"sudo -n sudo -n -l -U {user}", check=False)
    assert "not allowed to run sudo" in sudo.stdout, sudo.stdout + sudo.stderr

    def as_app(command: str) -> int:
        return server.ssh(f"sudo -n -u {user} sh -c {shlex.quote(command)}", check=False).returncode

    assert as_app(f"cat {app_dir}/.env > /dev/null") == 0  # it reads its settings ...
    for path in (f"{app_dir}/{program}.py", f"{app_dir}/venv/bin/python", f"{app_dir}/venv/pyvenv.cfg"):
        assert as_app(f": >> {path}") != 0, path  # ... but changes no code
    for folder in (app_dir, f"{app_dir}/venv", f"{app_dir}/venv/bin", f"{app_dir}/.git"):
        assert as_app(f"touch {folder}/planted") != 0, folder
    for path in ("/etc/bakery", f"/etc/bakery/{program}.env", "/etc/bakery/secrets"):
        assert as_app(f"ls {path} || cat {path}") != 0, path
    assert as_app(f"touch /var/lib/{program}/written && rm /var/lib/{program}/written") == 0  # its data folder


def assert_kernel_and_login_hardening(server, in_container: bool) -> None:
    """host.hardening on the booted server: kernel parameters (set, where the
    kernel is the guest's own), modules refused, no core dumps and an idle
    logout in a login shell, the banner, the packages."""
    from bakery.steps import hardening

    if not in_container:
        # Every parameter this kernel has (Yama may be missing), in one round
        # trip, as root: some (net.core.bpf_jit_harden) only root may read.
        keys = " ".join(hardening.SYSCTL)
        lines = server.ssh(f"for k in {keys}; do v=$(sudo -n sysctl -n $k 2>/dev/null) && echo \"$k=$v\"; done").stdout
        found = dict(line.split("=", 1) for line in lines.splitlines())
        assert set(hardening.SYSCTL) - set(found) <= {"kernel.yama.ptrace_scope"}, found
        assert {key: value.strip() for key, value in found.items()} == \
            {key: str(hardening.SYSCTL[key]) for key in found}, found
    modules = server.ssh("cat /etc/modprobe.d/60-bakery-hardening.conf").stdout
    assert "install sctp /bin/false" in modules, modules
    shell = server.ssh("bash -lc 'ulimit -c; echo $TMOUT'").stdout.split()
    assert shell == ["0", "900"], shell
    assert "Authorized access only" in server.ssh("cat /etc/issue.net").stdout
    installed = server.ssh("dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n' " + " ".join(hardening.PACKAGES)).stdout
    assert installed.count("ii ") == len(hardening.PACKAGES), installed
    assert "pam_passwdqc" in server.ssh("cat /etc/pam.d/common-password").stdout
    rounds = server.ssh("grep -E '^SHA_CRYPT_M(IN|AX)_ROUNDS' /etc/login.defs").stdout.split()
    assert rounds == ["SHA_CRYPT_MIN_ROUNDS", str(hardening.PASSWORD_HASH_ROUNDS),
                      "SHA_CRYPT_MAX_ROUNDS", str(hardening.PASSWORD_HASH_ROUNDS)], rounds
