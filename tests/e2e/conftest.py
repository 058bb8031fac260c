"""Fixtures for the end-to-end tests: host tool checks, the cached base image,
a per-run SSH key, and a guest factory for both tiers that always powers its
guests off.

A module picks its tiers by parametrizing its guest fixture with ``tier``
values (see ``tiers``): ``"container"`` (systemd-nspawn, seconds to minutes)
and ``"vm"`` (QEMU, the test of record). The tier is part of each test's id,
so ``-k container`` runs the fast tier alone.

When a test that used a guest fails, the guest's cloud-init and first-boot logs
are attached to the failure report, so a red run explains itself.
"""

from __future__ import annotations

import io
import os
import shutil

import pytest

from .container import Container
from .guest import Guest, generate_ssh_key
from .image import ensure_image
from .vm import VM

# Every guest this run started, for the timings in the terminal summary.
STARTED: list[Guest] = []

HOST_TOOLS = ["debootstrap", "mkfs.ext4", "unshare", "ssh", "ssh-keygen", "git"]
TIERS = {
    "vm": (VM, ["qemu-system-x86_64", "qemu-img"]),
    "container": (Container, ["systemd-nspawn", "slirp4netns", "ip", "mount"]),
}


try:
    # The suite's shared helper (tests/conftest.py): same skip/fail rule everywhere.
    from conftest import require_tool
except ImportError:
    def require_tool(name: str) -> None:
        """Skip without ``name``; under CI=true fail instead, so green means it ran."""
        if shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])):
            return
        message = f"{name} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def e2e_host():
    for tool in HOST_TOOLS:
        require_tool(tool)
    if os.geteuid() != 0:
        message = "building the base image needs root (debootstrap, chroot)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def base_image(e2e_host):
    return ensure_image()


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory):
    return generate_ssh_key(tmp_path_factory.mktemp("ssh-key"))


@pytest.fixture(scope="module")
def boot_guest(base_image, ssh_key, tmp_path_factory):
    """Start a guest from a seed ISO: ``boot_guest(seed, user, tier="vm", extra_ports=())``.

    Guests run one at a time (2 cores): booting one stops the module's
    earlier ones, and all are stopped when the module ends.
    """
    started: list[Guest] = []

    def boot(seed, user, tier="vm", extra_ports=()):
        kind, tools = TIERS[tier]
        for tool in tools:
            require_tool(tool)
        for previous in started:
            previous.stop()
        guest = kind(base_image, tmp_path_factory.mktemp(tier), seed, ssh_key, user, tuple(extra_ports))
        started.append(guest)
        STARTED.append(guest)
        guest.start()
        return guest

    yield boot
    for guest in started:
        guest.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Guest) and value.running:
            logs = io.StringIO()
            value.dump_logs(logs)
            report.sections.append(("guest logs", logs.getvalue()))
            report.sections.append(("phase timings (s since power-on)", repr(value.timings)))


def pytest_terminal_summary(terminalreporter):
    if not STARTED:
        return
    terminalreporter.section("guest phase timings (seconds since power-on)")
    for guest in STARTED:
        terminalreporter.write_line(f"{guest.workdir.name} ({guest.accel}): {guest.timings}")


def tiers(*, vm: bool) -> list[str]:
    """The tiers a module runs in: always the container; the VM too where
    the VM is the test of record (``vm=True``), or everywhere with
    ``BAKERY_E2E_VM=all`` (each extra VM boot costs minutes under TCG)."""
    return ["container"] + (["vm"] if vm or os.environ.get("BAKERY_E2E_VM") == "all" else [])


@pytest.fixture(scope="module")
def tier(request):
    """The guest tier a module runs under; modules give it with
    ``pytest.mark.parametrize("tier", [...], indirect=True, scope="module")``."""
    return request.param
