"""``bakery status`` against a real server, run as scripts and CI run it: its
standard output and error are pipes, not a terminal.

One guest, one first boot, in the container tier on the image of record:

- from power-on, before SSH is up, to a step that fails for good (the app's
  requirements cannot be installed): it waits for SSH, pins the host key and
  says so, shows the steps going forward, and ends "failed app" with exit 1,
  the end of the app step's log and the commands that run it again;
- the cause fixed upstream but the git host down, the machine rebooted: first
  boot carries on and waits in the app step, so ``--timeout 5`` ends "still
  running" with exit 3;
- the git host back: ``-v`` streams the steps' log lines up to "ready", exit 0;
- ``--after-update``: an update that fails to install (exit 1, with the
  update's log and the command that runs it again), then one watched while it
  runs, ready at the commit it deployed (exit 0).

No output has a carriage return or an escape sequence: without a terminal
there is no bar and no colour.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from . import scenario
from .conftest import platforms
from .gitserve import GitRepoServer
from .guest import wait_for
from .image import RECORD
from .test_first_boot import HOST

pytestmark = [pytest.mark.e2e]
PLATFORMS = platforms(container=(RECORD,))
BROKEN = "bakery-e2e-no-such-package==0.0.0\n"
STEP_LINE = re.compile(r"^bakery: first boot: step (\d+)/(\d+) (\S+) \(\d+:\d\d\)$", re.M)
UPDATE_STATUS = f"/var/log/bakery/{scenario.APP}-update.status"


def bakery_status(guest, workdir, *args, timeout: float = 1500) -> subprocess.CompletedProcess:
    """``bakery status`` with pipes for its output, from the scenario's folder
    (its bakery.yaml is the default config), with its own known_hosts."""
    env = dict(os.environ, XDG_CONFIG_HOME=str(workdir / "config"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(scenario.REPO_ROOT / "src"), os.environ.get("PYTHONPATH")])))
    env.pop("NO_COLOR", None)
    result = subprocess.run([sys.executable, "-m", "bakery", "status", "-p", str(guest.ports[22]),
                             "-i", str(guest.ssh_key), *args], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
    # In the report of a failed test (and with -s): what each run printed.
    print(f"$ bakery status {' '.join(args)}  -> exit {result.returncode}\n{result.stderr}{result.stdout}")
    assert not re.search(r"[\x1b\r]", result.stdout + result.stderr), repr(result.stderr[-2000:])
    return result


def write_config(workdir, ssh_key, repo, tier):
    config = scenario.write_config(workdir, ssh_key.with_suffix(".pub").read_text().strip(), repo.guest_url,
                                   tier=tier.tier)
    data = yaml.safe_load(config.read_text())
    data["app"]["ref"] = "main"  # a branch, which the fixes below move on
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


@pytest.mark.parametrize("tier", PLATFORMS, ids=str)
def test_bakery_status_from_power_on_to_its_verdicts(tier, boot_guest, ssh_key, tmp_path):
    repo = GitRepoServer(tmp_path / "git")
    good = (repo.worktree / "requirements.txt").read_text()
    repo.write("requirements.txt", good + BROKEN)
    repo.commit("a requirement that cannot be installed")
    try:
        config = write_config(tmp_path, ssh_key, repo, tier)
        guest = boot_guest(scenario.make_seed(config, tmp_path / "seed.iso"), scenario.ADMIN, tier=tier)
        admin = f"{scenario.ADMIN}@127.0.0.1"

        # Power-on to a failed step.
        failed = bakery_status(guest, tmp_path, admin, "--interval", "1")
        guest.mark("status-failed")
        err = failed.stderr
        assert (failed.returncode, failed.stdout) == (1, "failed app\n"), err
        assert "bakery: waiting for SSH: " in err, err
        assert re.search(r"pinned the host key of 127\.0\.0\.1 \(ED25519 SHA256:\S+\) in \S+/config/bakery/known_hosts", err)
        # Progress as it went: step lines in order, ending at the failed one.
        # Steps between may pass inside one poll (they take well under a second).
        steps = STEP_LINE.findall(err)
        numbers = [int(n) for n, _, _ in steps]
        assert numbers == sorted(numbers) and len(set(numbers)) >= 2 and steps[-1][2] == "app", err
        assert re.search(rf"first boot on {re.escape(admin)}:\d+ FAILED at step app after \d+:\d\d\n", err)
        tail = err[err.index("the end of its log (/var/log/bakery/first-boot.log):"):]
        assert "bakery-e2e-no-such-package" in tail and re.search(r"step app FAILED \(exit \d+\)", tail), tail
        port = guest.ports[22]
        retry = f"ssh -p {port} -i {guest.ssh_key} {admin} sudo /usr/local/lib/bakery/first-boot.sh"
        assert f"run it again: {retry}\n" in err and "--step" not in err
        assert "bakery: a reboot carries first boot on too\n" in err

        # Fixed upstream while the git host is down; first boot carries on
        # after a reboot and waits in the app step.
        repo.stop()
        repo.write("requirements.txt", good)
        repo.commit("requirements fixed")
        guest.reboot(timeout=400)
        assert wait_for(lambda: re.fullmatch(r"running \d+/\d+ app", guest.first_boot_status()),
                        timeout=900, interval=2), guest.first_boot_status()
        started = time.monotonic()
        running = bakery_status(guest, tmp_path, admin, "--timeout", "5", "--interval", "1")
        took = time.monotonic() - started
        assert running.returncode == 3 and re.fullmatch(r"running \d+/\d+ app\n", running.stdout), running.stderr
        assert re.search(r"first boot on \S+ is still running at --timeout \(0:05\): step \d+/\d+ app\n", running.stderr)
        assert 5 <= took < 30 and "pinned" not in running.stderr

        # The git host is back: -v streams each step's lines up to "ready".
        # The reboot's probes and the watches opened new SSH connections: the
        # firewall's window (6 in 30 s) empties first, so that this watch gets
        # in at once and not after the 30 s it waits when an attempt hangs.
        time.sleep(30)
        repo.start()
        ready = bakery_status(guest, tmp_path, admin, "-v", "--interval", "1")
        guest.mark("status-ready")
        assert (ready.returncode, ready.stdout) == (0, "ready\n"), ready.stderr
        assert re.search(rf"first boot on {re.escape(admin)}:\d+ is ready after \d+:\d\d\n", ready.stderr)
        assert re.search(r"^  \S+ == step \d+/\d+ nginx$", ready.stderr, re.M), ready.stderr
        assert re.search(r"^  \S+ -- step app done in \d+s$", ready.stderr, re.M), ready.stderr
        guest.wait_https(host=HOST, timeout=120)

        # An update that cannot install; the names come from the config.
        repo.write("requirements.txt", good + BROKEN)
        repo.commit("broken again")
        assert guest.ssh(f"sudo -n {scenario.APP}-update main", check=False, timeout=900).returncode != 0
        broken = bakery_status(guest, tmp_path, "127.0.0.1", "--after-update", "--timeout", "60")
        assert (broken.returncode, broken.stdout) == (1, "failed install\n"), broken.stderr
        assert re.search(rf"{scenario.APP}-update on {re.escape(admin)}:\d+ FAILED at step install", broken.stderr)
        assert "bakery-e2e-no-such-package" in broken.stderr
        assert f"run it again: ssh -p {port} -i {guest.ssh_key} {admin} sudo /usr/local/bin/{scenario.APP}-update main\n" \
            in broken.stderr

        # A good one, watched while it runs.
        repo.write("requirements.txt", good)
        head = repo.commit("fixed again")
        update = subprocess.Popen([*guest.ssh_command(), f"sudo -n {scenario.APP}-update main"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: re.match(rf"running |ready {head}$", guest.ssh(f"sudo -n cat {UPDATE_STATUS}").stdout),
                            timeout=300, interval=0.5)
            updated = bakery_status(guest, tmp_path, admin, "--after-update", "--app", scenario.APP, "--timeout", "10m",
                                    "--interval", "1")
        finally:
            update.wait(600)
        assert (updated.returncode, updated.stdout) == (0, f"ready {head}\n"), updated.stderr
        assert f"is ready at {head[:12]} after" in updated.stderr
    finally:
        repo.close()
