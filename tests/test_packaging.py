"""The wheel carries everything: built, installed in a fresh venv, and run
from a directory outside the checkout, bakery still finds its templates,
Packer files and schema."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, make_public_key


@pytest.mark.slow
def test_wheel_installs_and_renders_outside_checkout(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, REPO], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("bakery_firstboot-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    install = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519.pub").write_text(make_public_key()[0] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "bakery.yaml").write_text((REPO / "examples" / "microblog.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HOME"] = str(home)
    result = subprocess.run([venv / "bin" / "bakery", "render", "--target", "digitalocean"], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#cloud-config\n") and "first-boot.sh" in result.stdout

    where = subprocess.run([venv / "bin" / "python", "-c",
                            "from bakery.resources import data_path as d; print(d('cloudinit')); print(d('packer')); print(d('schemas'))"],
                           cwd=work, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert str(venv) in line and "/bakery/_data/" in line
