"""Fixtures for the end-to-end tests: host tool checks, the cached base image,
a per-run SSH key, and a guest factory for both tiers that always powers its
guests off.

A module picks where it runs by parametrizing its ``tier`` fixture with
``Platform`` values (see ``platforms``): a tier, ``container``
(systemd-nspawn, seconds to minutes) or ``vm`` (QEMU, the test of record), and
a distribution of ``image.DISTROS``. Both are part of each test's id
(``[container-debian-13]``, ``[vm-ubuntu-24.04]``), so ``-k container`` runs
the fast tier alone and ``-k ubuntu-24.04`` one distribution.

When a test that used a guest fails, the guest's cloud-init and first-boot logs
are attached to the failure report, so a red run explains itself.
"""

from __future__ import annotations

import io
import os
import shutil
from typing import NamedTuple

import pytest

from .container import Container
from .guest import Guest, generate_ssh_key
from .image import DISTROS, RECORD, ensure_image
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


class Platform(NamedTuple):
    """Where a guest runs: a tier and a distribution's image."""

    tier: str
    distro: str = RECORD

    def __str__(self) -> str:
        return f"{self.tier}-{self.distro}"


@pytest.fixture(scope="session")
def base_images(e2e_host):
    """The image of each distribution, built (or found in the cache) on first use."""
    images: dict = {}

    def get(distro: str):
        if distro not in images:
            images[distro] = ensure_image(distro)
        return images[distro]

    return get


@pytest.fixture(scope="session")
def base_image(base_images):
    return base_images(RECORD)


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory):
    return generate_ssh_key(tmp_path_factory.mktemp("ssh-key"))


@pytest.fixture(scope="module")
def boot_guest(base_images, ssh_key, tmp_path_factory):
    """Start a guest from a seed ISO: ``boot_guest(seed, user, tier=Platform(...), extra_ports=())``
    (a bare tier name boots the image of record). ``ports`` maps guest ports to
    host ports chosen beforehand, for a host service that must know where the
    guest answers before the guest exists (the ACME CA's HTTP-01 port).

    Guests run one at a time (2 cores): booting one stops the module's
    earlier ones, and all are stopped when the module ends.
    """
    started: list[Guest] = []

    def boot(seed, user, tier="vm", extra_ports=(), ports=None):
        platform = tier if isinstance(tier, Platform) else Platform(tier)
        kind, tools = TIERS[platform.tier]
        for tool in tools:
            require_tool(tool)
        for previous in started:
            previous.stop()
        guest = kind(base_images(platform.distro), tmp_path_factory.mktemp(str(platform)), seed, ssh_key, user,
                     tuple(extra_ports))
        guest.ports.update(ports or {})
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


def platforms(*, container=tuple(DISTROS), vm=()) -> list:
    """Where a module runs: the container tier on each of ``container``'s
    distributions, the VM on each of ``vm`` (where the VM is the test of
    record); with ``BAKERY_E2E_VM=all`` the VM on every one of them (each VM
    boot costs minutes under TCG)."""
    if os.environ.get("BAKERY_E2E_VM") == "all":
        vm = tuple(dict.fromkeys((*vm, *container)))
    return ([Platform("container", d) for d in container] + [Platform("vm", d) for d in vm])


def tiers(*, vm: bool) -> list:
    """The image of record, in the container tier, and in the VM too where the
    VM is the test of record (``vm=True``)."""
    return platforms(container=(RECORD,), vm=(RECORD,) if vm else ())


@pytest.fixture(scope="module")
def tier(request):
    """The guest tier a module runs under; modules give it with
    ``pytest.mark.parametrize("tier", [...], indirect=True, scope="module")``."""
    return request.param
