"""Fixtures for the end-to-end tests: host tool checks, the cached base image,
a per-run SSH key, and a VM factory that always powers its guests off.

When a test that used a VM fails, the guest's cloud-init and first-boot logs
are attached to the failure report, so a red run explains itself.
"""

from __future__ import annotations

import io
import os
import shutil

import pytest

from .image import ensure_image
from .vm import VM, generate_ssh_key

# Every guest this run started, for the timings in the terminal summary.
STARTED: list[VM] = []

HOST_TOOLS = ["qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4", "unshare",
              "ssh", "ssh-keygen", "git"]


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
def boot_vm(base_image, ssh_key, tmp_path_factory):
    """Start a VM from a seed: ``boot_vm(seed, user, extra_ports=())``.

    Guests run one at a time (2 cores); each is stopped when its module ends.
    """
    started: list[VM] = []

    def boot(seed, user, extra_ports=()):
        for previous in started:
            previous.stop()
        vm = VM(base_image, tmp_path_factory.mktemp("vm"), seed, ssh_key, user, tuple(extra_ports))
        started.append(vm)
        STARTED.append(vm)
        vm.start()
        return vm

    yield boot
    for vm in started:
        vm.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, VM) and value.running:
            logs = io.StringIO()
            value.dump_logs(logs)
            report.sections.append(("guest logs", logs.getvalue()))
            report.sections.append(("phase timings (s since power-on)", repr(value.timings)))


def pytest_terminal_summary(terminalreporter):
    if not STARTED:
        return
    terminalreporter.section("VM phase timings (seconds since power-on)")
    for vm in STARTED:
        terminalreporter.write_line(f"{vm.workdir.name} ({vm.accel}): {vm.timings}")
