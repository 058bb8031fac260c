"""The Raspberry-Pi-style variant, booted for real: the seed that ``bakery seed
--target raspberry-pi`` makes (SQLite, no nginx, gunicorn listening on its own
port with one worker, admin user ``pi``, avahi) on an amd64 image of Debian
13, the base of Raspberry Pi OS Trixie (cloud-init 25, Python 3.13, OpenSSH
10): what differs from a Pi is the CPU, not the configuration. The server is checked from outside: SSH, firewall, cloud-init, the app
answering straight from gunicorn with a row read from SQLite, supervisor, and
the ``.env`` file.

It runs in the systemd-nspawn container tier; ``BAKERY_E2E_VM=all`` boots
it in the QEMU VM as well (about nine more minutes under TCG each). One guest per
platform serves the whole module and is not rebooted; the test that kills
gunicorn comes last.
"""

from __future__ import annotations

import re

import pytest

from . import checks, scenario
from .conftest import platforms
from .gitserve import GitRepoServer
from .guest import GuestError

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("tier", platforms(container=("debian-13",)), indirect=True, scope="module", ids=str),
]

APP = scenario.APP
ADMIN = scenario.PI_ADMIN
PORT = scenario.PI_APP_PORT
ENV_FILE = f"{scenario.PI_APP_DIR}/.env"


@pytest.fixture(scope="module")
def repo(tier, tmp_path_factory):
    server = GitRepoServer(tmp_path_factory.mktemp("git"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(tier, boot_guest, ssh_key, repo, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pi-variant")
    config = scenario.write_config(workdir, ssh_key.with_suffix(".pub").read_text().strip(), repo.guest_url,
                                   pi=True, tier=tier.tier)
    seed = scenario.make_seed(config, workdir / "seed.iso", target=scenario.PI_TARGET)
    vm = boot_guest(seed, ADMIN, tier=tier, extra_ports=(PORT,))
    try:
        vm.wait_ssh(timeout=400)
        assert vm.wait_first_boot(timeout=1500) == "ready", vm.ssh("sudo -n tail -n 60 /var/log/bakery/first-boot.log").stdout
        vm.wait_http(port=PORT, timeout=120)
    except GuestError:
        vm.dump_logs()
        raise
    return vm


def page(vm):
    response = vm.http("/", scheme="http", port=PORT)
    assert response.status == 200, response
    return response.body


def database_path(vm) -> str:
    text = vm.ssh(f"sudo -n cat {ENV_FILE}").stdout
    match = re.search(r"^DATABASE_URL=['\"]?sqlite:///([^'\"\n]+)", text, re.M)
    assert match, text
    return match.group(1)


# --- SSH ---------------------------------------------------------------------------

def test_pi_ssh_and_passwordless_sudo(server):
    assert server.ssh("whoami").stdout.strip() == ADMIN
    assert server.ssh("sudo -n true").returncode == 0


def test_root_login_refused(server):
    checks.assert_root_login_refused(server)


def test_password_login_refused(server):
    checks.assert_password_login_refused(server, ADMIN)


# --- firewall -------------------------------------------------------------------------

def test_firewall_allows_exactly_ssh_and_the_app_port(server):
    checks.assert_firewall_allows_exactly(server, {"22/tcp", f"{PORT}/tcp"})


# --- cloud-init -----------------------------------------------------------------------

def test_cloud_init_done_without_errors(server):
    checks.assert_cloud_init_done(server)
    log = server.ssh("sudo -n cat /var/log/bakery/first-boot.log").stdout
    assert "bakery first boot finished" in log, log[-2000:]


# --- the app, straight from gunicorn ------------------------------------------------------

def test_page_served_by_gunicorn_with_row_from_sqlite(server):
    response = server.http("/", scheme="http", port=PORT)
    assert response.status == 200
    assert response.headers.get("server", "").startswith("gunicorn"), response.headers
    assert "version: 1" in response.body
    assert "row: hello from the database" in response.body


def test_no_nginx_and_no_database_server(server):
    for package in ("nginx", "default-mysql-server", "mariadb-server"):
        assert server.ssh(f"dpkg -s {package}", check=False).returncode != 0, package
    listening = server.ssh("sudo -n ss -Hltn").stdout
    assert not re.search(r":(80|443|3306)\s", listening), listening
    # gunicorn itself listens on every address, on the app port.
    assert re.search(rf"(0\.0\.0\.0|\*):{PORT}\s", listening), listening


def test_database_is_the_sqlite_file_from_env(server):
    path = database_path(server)
    assert path == f"{scenario.DATA_DIR}/{APP}.db"
    rows = server.ssh(f"sudo -n sqlite3 {path} 'SELECT text FROM greeting'").stdout
    assert rows.strip() == "hello from the database"
    # The app's, which writes it; its migrations made it.
    assert server.ssh(f"sudo -n stat -c %U {path}").stdout.strip() == f"{APP}-web"


def test_env_file_is_private_to_the_app(server):
    mode_owner = server.ssh(f"sudo -n stat -c '%a %U %G' {ENV_FILE}").stdout.split()
    assert mode_owner == ["640", APP, f"{APP}-web"]


def test_the_app_cannot_change_its_code_and_drives_the_hardware(server):
    checks.assert_app_process_is_isolated(server, APP, scenario.PI_APP_DIR)
    groups = set(server.ssh(f"id -nG {APP}-web").stdout.split())
    assert {"gpio", "i2c", "spi", "dialout"} <= groups, groups


def test_gunicorn_runs_exactly_one_worker(server):
    master = checks.gunicorn_master(server, APP)
    workers = server.ssh(f"pgrep -P {master}", check=False).stdout.split()
    assert len(workers) == 1, workers
    args = server.ssh(f"tr '\\0' ' ' < /proc/{master}/cmdline").stdout.split()
    assert args[args.index("-w") + 1] == "1", args


# --- Raspberry Pi target ------------------------------------------------------------------

def test_avahi_installed_and_pi_groups(server):
    assert server.ssh("dpkg -s avahi-daemon", check=False).returncode == 0
    groups = server.ssh("id -nG").stdout.split()
    assert {"sudo", "gpio", "i2c", "spi", "dialout"} <= set(groups), groups
    assert server.ssh("systemctl is-enabled ssh").stdout.strip() == "enabled"


def test_hardened_but_usb_storage_stays(server, tier):
    checks.assert_kernel_and_login_hardening(server, in_container=tier.tier == "container")
    assert "usb-storage" not in server.ssh("cat /etc/modprobe.d/60-bakery-hardening.conf").stdout


# --- supervisor (last: it restarts the app) -----------------------------------------------

def test_supervisor_restarts_killed_gunicorn(server):
    server.timings["gunicorn-takeover"] = checks.assert_supervisor_restarts_killed_gunicorn(
        server, APP, PORT, lambda: "row: hello from the database" in page(server))
