"""Checks both booted scenarios make from outside the guest: logins refused,
the firewall's open ports, and cloud-init's result."""

from __future__ import annotations

import json
import subprocess


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


def assert_firewall_allows_exactly(server, rules: set) -> None:
    status = server.ssh("sudo -n ufw status").stdout
    assert "Status: active" in status, status
    allowed = {line.split()[0].replace(" (v6)", "") for line in status.splitlines() if " ALLOW " in line}
    assert allowed == rules, status
    assert "deny (incoming)" in server.ssh("sudo -n ufw status verbose").stdout


def assert_cloud_init_done(server) -> None:
    status = server.ssh("cloud-init status --long", check=False)
    assert "status: done" in status.stdout, status.stdout + status.stderr
    result = json.loads(server.ssh("cat /run/cloud-init/result.json").stdout)
    assert result["v1"]["errors"] == [], result
