"""The end-to-end scenarios: the bakery.yaml files the VM tests and the
first-boot benchmark deploy, and the seeds made from them by bakery's own CLI.

The main scenario is the production stack (MariaDB, the fixture app in a venv
under gunicorn and supervisor, nginx with a self-signed certificate, ufw,
hardened sshd, postfix signing with opendkim), cloning the fixture app from
the host's git server. The
Raspberry-Pi-style variant is the same app for the ``raspberry-pi`` target:
SQLite, no nginx, gunicorn listening on its own port, admin user ``pi``. The
Let's Encrypt variant is the main scenario with ``tls: letsencrypt`` against a
local ACME CA (``acmeserve.py``), with SQLite and no mail, which its checks do
not need.
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
# The app's own user (named after it) owns the code; it runs as APP-web.
APP_DIR = f"/home/{APP}/{APP}/current"  # the link to the release serving
APP_PORT = 8000  # bakery's default: gunicorn on 127.0.0.1, behind nginx
EXTRA_PORTS = "60000:60010/udp"  # firewall.allow in the main scenario
MAIN_RULES = {"22/tcp", "80/tcp", "443/tcp", EXTRA_PORTS}

PI_TARGET = "raspberry-pi"
PI_ADMIN = "pi"
PI_APP_PORT = 8000
PI_APP_DIR = APP_DIR
DATA_DIR = f"/var/lib/{APP}"
ACME_EMAIL = "ops@example.test"


def host_ca_certs() -> list[str]:
    """CA certificates this host trusts beyond the distribution's; a guest
    behind the same TLS-inspecting proxy needs them to reach the package index."""
    return [str(path) for path in sorted(HOST_CA_DIR.glob("*.crt"))]


def scenario_config(public_key: str, repo_url: str, admin: str = ADMIN) -> dict:
    config = {
        "admin": {"name": admin, "ssh_keys": [public_key]},
        "host": {"hostname": "fixture", "domain": "example.test"},
        "database": {"engine": "mysql"},
        "app": {
            "name": APP,
            "repo": repo_url,
            # The fixture's git server on the host speaks plain HTTP.
            "insecure_transport": True,
            "ref": "v1",
            "module": "fixture:app",
            "pip_packages": ["gunicorn"],
            "environment": {"FLASK_APP": "fixture.py"},
            "migrate": ["flask init-db"],
            "static": "static",
        },
        "web": {"nginx": True, "tls": "self-signed"},
        # One more port, as users open one: ufw must take bakery's rule.
        "firewall": {"allow": [EXTRA_PORTS]},
        # postfix sends the app's mail, signed by opendkim for example.test.
        "mail": {"enabled": True},
    }
    cas = host_ca_certs()
    if cas:
        config["network"] = {"ca_certs": cas}
    return config


def pi_config(public_key: str, repo_url: str) -> dict:
    """The Raspberry-Pi-style variant: what the ``raspberry-pi`` target
    defaults to, spelled out so the test does not depend on the defaults."""
    config = scenario_config(public_key, repo_url, admin=PI_ADMIN)
    config["database"] = {"engine": "sqlite"}
    config["app"]["port"] = PI_APP_PORT
    config["app"]["workers"] = 1
    config["web"] = {"nginx": False}
    config["firewall"] = {"enabled": True}
    return config


def letsencrypt_config(public_key: str, repo_url: str, acme_directory: str, acme_cas: list[Path]) -> dict:
    """The main scenario asking ``acme_directory`` for its certificate, trusting
    ``acme_cas`` (that CA's roots), as a server of a private CA would."""
    config = scenario_config(public_key, repo_url)
    config["database"] = {"engine": "sqlite"}
    config["mail"] = {"enabled": False}
    config["web"] = {"nginx": True, "tls": "letsencrypt", "domain": DOMAIN, "email": ACME_EMAIL,
                     "acme_server": acme_directory}
    config["network"] = {"ca_certs": [*host_ca_certs(), *map(str, acme_cas)]}
    return config


def write_config(directory: Path, public_key: str, repo_url: str, *, pi: bool = False,
                 tier: str = "vm", acme: tuple[str, list[Path]] | None = None) -> Path:
    """The main scenario's bakery.yaml; ``pi`` the Raspberry-Pi-style variant's,
    ``acme`` (directory URL, CA files) the Let's Encrypt variant's."""
    path = directory / "bakery.yaml"
    if acme:
        config = letsencrypt_config(public_key, repo_url, *acme)
    else:
        config = (pi_config if pi else scenario_config)(public_key, repo_url)
    if tier == "container":
        # A container cannot swap: the host kernel refuses swapon.
        config["swap"] = False
        # The unhealthy-update test waits the whole health timeout before it
        # puts the previous release back; in a container gunicorn answers in
        # seconds (the default 60 s stays for TCG's VM, and for users).
        config.get("app", {}).setdefault("health_timeout", 20)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def bakery(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the bakery CLI from this checkout, installed or not (``env``: more
    environment variables)."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), full_env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "bakery", *args], env=full_env,
                          capture_output=True, text=True, check=True)


def make_seed(config: Path, output: Path, target: str = "generic") -> Path:
    bakery("seed", "-c", str(config), "--target", target, "-o", str(output))
    return output
