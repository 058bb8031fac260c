"""The rendered example in examples/rendered/ is what bakery renders today
(regenerate with scripts/render-examples), and the microblog user-data fits
the smallest provider limit (16 KiB) as plain #cloud-config text, its large
files packed as cloud-init unpacks them."""

from __future__ import annotations

import shutil

from conftest import REPO, run_bakery

RENDERED = REPO / "examples" / "rendered"


def test_rendered_example_has_not_drifted(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(RENDERED / "example-key.pub", home / ".ssh" / "id_ed25519.pub")
    secrets = tmp_path / "secrets.yaml"
    result = run_bakery(["render", "-c", REPO / "examples" / "microblog.yaml", "--target", "digitalocean", "--secrets", secrets], home=home)
    assert result.returncode == 0, result.stderr.decode()
    assert not secrets.exists()  # secrets: server: none drawn on the workstation
    expected = (RENDERED / "microblog.digitalocean.user-data").read_bytes()
    assert result.stdout == expected, "examples/rendered is stale: run scripts/render-examples"
    small = run_bakery(["render", "-c", REPO / "examples" / "microblog.yaml", "--target", "ec2", "--secrets", secrets], home=home)
    assert small.returncode == 0, small.stderr.decode()
    assert small.stdout.startswith(b"#cloud-config\n") and len(small.stdout) <= 16 * 1024
    assert b"encoding: gz+b64" in small.stdout and b"encoding: gz+b64" not in result.stdout
