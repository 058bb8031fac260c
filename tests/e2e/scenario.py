"""The main end-to-end scenario: the bakery.yaml the VM test and the
first-boot benchmark deploy, and the seed made from it by bakery's own CLI.

The server it describes is the production stack (MariaDB, the fixture app in
a venv under gunicorn and supervisor, nginx with a self-signed certificate,
ufw, hardened sshd), cloning the fixture app from the host's git server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")

ADMIN = "admin"
APP = "fixture"
DOMAIN = "fixture.example.test"
APP_DIR = f"/home/{ADMIN}/{APP}"


def host_ca_certs() -> list[str]:
    """CA certificates this host trusts beyond the distribution's; a guest
    behind the same TLS-inspecting proxy needs them to reach the package index."""
    return [str(path) for path in sorted(HOST_CA_DIR.glob("*.crt"))]


def scenario_config(public_key: str, repo_url: str) -> dict:
    config = {
        "admin": {"name": ADMIN, "ssh_keys": [public_key]},
        "host": {"hostname": "fixture", "domain": "example.test"},
        "database": {"engine": "mysql"},
        "app": {
            "name": APP,
            "repo": repo_url,
            "ref": "v1",
            "module": "fixture:app",
            "pip_packages": ["gunicorn"],
            "environment": {"FLASK_APP": "fixture.py"},
            "migrate": ["flask init-db"],
            "static": "static",
        },
        "web": {"nginx": True, "tls": "self-signed"},
        # The fixture sends no mail; postfix would only add install time.
        "mail": {"enabled": False},
    }
    cas = host_ca_certs()
    if cas:
        config["network"] = {"ca_certs": cas}
    return config


def write_config(directory: Path, public_key: str, repo_url: str) -> Path:
    path = directory / "bakery.yaml"
    path.write_text(yaml.safe_dump(scenario_config(public_key, repo_url), sort_keys=False))
    return path


def bakery(*args: str) -> subprocess.CompletedProcess:
    """Run the bakery CLI from this checkout, installed or not."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "bakery", *args], env=env,
                          capture_output=True, text=True, check=True)


def make_seed(config: Path, output: Path) -> Path:
    bakery("seed", "-c", str(config), "--target", "generic", "-o", str(output))
    return output
