"""The Packer folders, checked by Packer itself (Debian's 1.6.6 validates the
digitalocean, amazon-ebs, hcloud and qemu builders offline), plus shellcheck on
the scripts the builds run and Ruby's syntax check on the Vagrantfile."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, require_tool, run_bakery
from bakery.errors import UsageError
from bakery.targets import TARGETS as ALL_TARGETS, get_target
from bakery.outputs.packer import (
    BUILDERS,
    VARS_FILE,
    builder_for,
    hcl_string,
    render_vars_file,
    write_packer_dir,
)

EXAMPLE = REPO / "examples" / "microblog.yaml"
USER_DATA = b"#cloud-config\nhostname: web1\n"
CHECKSUM = "sha512:" + "0123456789abcdef" * 8

# Dummy credentials: validate never calls the provider APIs.
CREDENTIALS = {
    "DIGITALOCEAN_API_TOKEN": "dummy-token",
    "AWS_ACCESS_KEY_ID": "AKIADUMMY",
    "AWS_SECRET_ACCESS_KEY": "dummy-secret",
    "HCLOUD_TOKEN": "dummy-token",
}

TARGET_BUILDERS = {t.name: t.packer for t in ALL_TARGETS.values() if t.packer}
TARGETS = sorted(TARGET_BUILDERS)


def variables_for(target: str) -> dict:
    variables = {"ssh_username": "ubuntu", "image_name": f"bakery-{target}"}
    if TARGET_BUILDERS[target] == "qemu":
        variables["source_image_checksum"] = CHECKSUM
    return variables


def packer(*args: str, cwd, credentials: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    env["CHECKPOINT_DISABLE"] = "1"  # no update check over the network
    if credentials:
        env.update(CREDENTIALS)
    return subprocess.run([require_tool("packer"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def validate(folder, target: str, credentials: bool = True) -> subprocess.CompletedProcess:
    template = f"{TARGET_BUILDERS[target]}.pkr.hcl"
    # Packer 1.6.6 cannot parse plugins.pkr.hcl, so the template is validated by
    # name, and then the variables file is not picked up on its own.
    return packer("validate", f"-var-file={VARS_FILE}", template, cwd=folder, credentials=credentials)


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_validates_and_is_formatted(target, tmp_path):
    written = write_packer_dir(tmp_path, get_target(target), USER_DATA, variables_for(target))
    result = validate(tmp_path, target)
    assert result.returncode == 0, result.stdout + result.stderr
    hcl_files = [p for p in written if p.name.endswith(".hcl")]
    assert {p.name for p in hcl_files} == {f"{TARGET_BUILDERS[target]}.pkr.hcl", "plugins.pkr.hcl", VARS_FILE}
    for path in hcl_files:
        fmt = packer("fmt", "-check", "-diff", path.name, cwd=tmp_path)
        assert fmt.returncode == 0, f"{path.name} needs formatting:\n{fmt.stdout}{fmt.stderr}"


def test_fmt_check_does_catch_bad_formatting(tmp_path):
    (tmp_path / "x.pkrvars.hcl").write_text('a = "1"\nlonger = "2"\n')
    assert packer("fmt", "-check", "x.pkrvars.hcl", cwd=tmp_path).returncode == 3


@pytest.mark.parametrize("target", TARGETS)
def test_missing_user_data_fails_validation(target, tmp_path):
    write_packer_dir(tmp_path, get_target(target), USER_DATA, variables_for(target))
    (tmp_path / "user-data").unlink()
    result = validate(tmp_path, target)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    if TARGET_BUILDERS[target] == "qemu":
        assert "Bad CD disk file './user-data'" in message
    else:
        assert "user_data_file not found: ./user-data" in message


@pytest.mark.parametrize("target, variable", [("digitalocean", "DIGITALOCEAN_API_TOKEN"), ("hetzner", "HCLOUD_TOKEN")])
def test_missing_token_is_named(target, variable, tmp_path):
    write_packer_dir(tmp_path, get_target(target), USER_DATA, variables_for(target))
    result = validate(tmp_path, target, credentials=False)
    assert result.returncode != 0
    assert f"Set the {variable} environment variable" in result.stdout + result.stderr


def test_folder_contents_and_modes(tmp_path):
    written = write_packer_dir(tmp_path, get_target("generic"), USER_DATA, variables_for("generic"), hostname="web1")
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == sorted([
        "qemu.pkr.hcl", "plugins.pkr.hcl", "scripts/wait-for-cloud-init.sh", "scripts/clean-image.sh",
        "user-data", "meta-data", VARS_FILE, "README.md",
    ])
    assert (tmp_path / "user-data").read_bytes() == USER_DATA
    assert stat.S_IMODE((tmp_path / "user-data").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "meta-data").stat().st_mode) == 0o600
    assert b"local-hostname: web1" in (tmp_path / "meta-data").read_bytes()
    assert "required_plugins" in (tmp_path / "plugins.pkr.hcl").read_text()
    assert "github.com/hashicorp/qemu" in (tmp_path / "plugins.pkr.hcl").read_text()


@pytest.mark.parametrize("target", TARGETS)
def test_readme_names_the_build_command_and_credentials(target, tmp_path):
    write_packer_dir(tmp_path, get_target(target), USER_DATA, variables_for(target))
    readme = (tmp_path / "README.md").read_text()
    builder = builder_for(get_target(target))
    assert "packer init .\npacker build .\n" in readme
    assert f"packer build -var-file={VARS_FILE} {builder.name}.pkr.hcl" in readme
    if builder.credentials:
        assert builder.credentials in readme


def test_secrets_never_reach_the_variables_file(tmp_path):
    with pytest.raises(UsageError, match="DIGITALOCEAN_API_TOKEN"):
        write_packer_dir(tmp_path, get_target("digitalocean"), USER_DATA, {"ssh_username": "ubuntu", "api_token": "dop_v1_x"})
    with pytest.raises(UsageError, match="HCLOUD_TOKEN"):
        write_packer_dir(tmp_path, get_target("hetzner"), USER_DATA, {"ssh_username": "ubuntu", "hcloud_token": "x"})
    assert list(tmp_path.iterdir()) == []


def test_unknown_and_missing_variables_are_refused(tmp_path):
    with pytest.raises(UsageError, match="did you mean 'region'"):
        write_packer_dir(tmp_path, get_target("digitalocean"), USER_DATA, {"ssh_username": "ubuntu", "regoin": "ams3"})
    with pytest.raises(UsageError, match="ssh_username"):
        write_packer_dir(tmp_path, get_target("digitalocean"), USER_DATA, {})
    with pytest.raises(UsageError, match="source_image_checksum"):
        write_packer_dir(tmp_path, get_target("generic"), USER_DATA, {"ssh_username": "ubuntu"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target, hint", [("linode", "github.com/linode/linode"), ("raspberry-pi", "bakery sd-image"), ("vultr", "unknown target .vultr.")])
def test_targets_without_builder(target, hint, tmp_path):
    with pytest.raises(UsageError, match=hint):
        write_packer_dir(tmp_path, get_target(target), USER_DATA, {"ssh_username": "ubuntu"})


def test_checksum_must_be_a_digest_not_a_url(tmp_path):
    variables = dict(variables_for("generic"), source_image_checksum="file:https://cloud.debian.org/SHA512SUMS")
    write_packer_dir(tmp_path, get_target("generic"), USER_DATA, variables)
    result = validate(tmp_path, "generic")
    assert result.returncode != 0
    assert "source_image_checksum value must be" in result.stdout + result.stderr


def test_switching_target_removes_the_other_template(tmp_path):
    write_packer_dir(tmp_path, get_target("digitalocean"), USER_DATA, variables_for("digitalocean"))
    write_packer_dir(tmp_path, get_target("hetzner"), USER_DATA, variables_for("hetzner"))
    assert sorted(p.name for p in tmp_path.glob("*.pkr.hcl")) == ["hcloud.pkr.hcl", "plugins.pkr.hcl"]


def test_variables_file_values(tmp_path):
    text = render_vars_file({"ssh_port": 2222, "image_name": "web", "ssh_username": "ops"})
    assert 'image_name   = "web"\nssh_port     = 2222\nssh_username = "ops"\n' in text
    for control in ("\x00", "\x1b", "\x7f", "\x85"):
        with pytest.raises(UsageError, match="control character"):
            hcl_string(f"a{control}b")
    with pytest.raises(UsageError):
        render_vars_file({"memory": 1.5})
    with pytest.raises(UsageError):
        render_vars_file({"bad name": "x"})


# --- the HCL quoting reads back unchanged in Packer --------------------------

CONSOLE_TEMPLATE = """variable "v{i}" {{
  type = string
}}
"""
TRICKY = ['plain', 'a"b', 'back\\slash', '${env("HOME")}', '$${x}', '%{ if true }x%{ endif }', '%%{', 'line\nbreak\ttab\r',
          'caf\u00e9 \U0001F600', '$', '\\"', 'trailing\\', 'line\u2028separator']


def packer_reads_back(tmp_path, values: list[str]) -> list[str]:
    template = "".join(CONSOLE_TEMPLATE.format(i=i) for i in range(len(values)))
    template += 'source "null" "x" {\n  communicator = "none"\n}\n\nbuild {\n  sources = ["source.null.x"]\n}\n'
    (tmp_path / "t.pkr.hcl").write_text(template)
    (tmp_path / "v.pkrvars.hcl").write_text(render_vars_file({f"v{i}": v for i, v in enumerate(values)}))
    fmt = packer("fmt", "-check", "v.pkrvars.hcl", cwd=tmp_path)
    assert fmt.returncode == 0, fmt.stdout
    expression = "jsonencode([" + ", ".join(f"var.v{i}" for i in range(len(values))) + "])\n"
    env = dict(os.environ, CHECKPOINT_DISABLE="1")
    result = subprocess.run([require_tool("packer"), "console", "-var-file=v.pkrvars.hcl", "t.pkr.hcl"], cwd=tmp_path,
                            input=expression, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # split on "\n" only: str.splitlines() also splits inside values (U+0085, U+2028).
    return json.loads(result.stdout.strip("\n").split("\n")[-1])


def test_hcl_quoting_round_trips_tricky_values(tmp_path):
    assert packer_reads_back(tmp_path, TRICKY) == TRICKY


@settings(max_examples=15, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r${}%\\\""), max_size=30),
                min_size=1, max_size=8))
def test_hcl_quoting_round_trips_any_text(tmp_path_factory, values):
    assert packer_reads_back(tmp_path_factory.mktemp("hcl"), values) == values


# --- the scripts the builds run, and real rendered user-data ----------------

@pytest.mark.parametrize("script", ["wait-for-cloud-init.sh", "clean-image.sh"])
def test_build_scripts_pass_shellcheck(script):
    result = subprocess.run([require_tool("shellcheck"), "-s", "sh", str(REPO / "packer" / "scripts" / script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_clean_up_removes_per_instance_state():
    script = (REPO / "packer" / "scripts" / "clean-image.sh").read_text()
    for step in ("cloud-init clean --logs", "rm -f /etc/ssh/ssh_host_*", "truncate -s 0 /etc/machine-id",
                 "/var/lib/dbus/machine-id", ".bash_history", "ssl-cert-snakeoil.key", "/var/lib/mysql/$file",
                 "/var/lib/systemd/credential.secret"):
        assert step in script
    for builder in BUILDERS:
        template = (REPO / "packer" / f"{builder}.pkr.hcl").read_text()
        assert template.index("wait-for-cloud-init.sh") < template.index("clean-image.sh")


@pytest.mark.parametrize("target", ["digitalocean", "ec2", "hetzner", "generic"])
def test_rendered_example_bakes(target, tmp_path, workstation):
    user_data = tmp_path / "user-data.rendered"
    result = run_bakery(["render", "-c", EXAMPLE, "--target", target, "-o", user_data, "--secrets", tmp_path / "s.yaml"],
                        home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    folder = tmp_path / "packer"
    write_packer_dir(folder, get_target(target), user_data.read_bytes(), variables_for(target))
    assert (folder / "user-data").read_bytes() == user_data.read_bytes()
    check = validate(folder, target)
    assert check.returncode == 0, check.stdout + check.stderr


# --- the Vagrantfile --------------------------------------------------------

def test_vagrantfile_syntax():
    result = subprocess.run([require_tool("ruby"), "-c", str(REPO / "Vagrantfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stdout


def run_vagrantfile(folder, *args, experimental: str | None = None) -> subprocess.CompletedProcess:
    # Plain Ruby runs the Vagrantfile's checks, which come before Vagrant itself
    # is needed; ARGV stands for the vagrant command line.
    env = {k: v for k, v in os.environ.items() if k != "VAGRANT_EXPERIMENTAL"}
    if experimental is not None:
        env["VAGRANT_EXPERIMENTAL"] = experimental
    return subprocess.run([require_tool("ruby"), "Vagrantfile", *args], cwd=folder, env=env, capture_output=True, text=True)


def test_vagrantfile_finds_rendered_user_data(tmp_path, workstation):
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / "Vagrantfile").write_bytes((REPO / "Vagrantfile").read_bytes())

    missing = run_vagrantfile(folder, "up")
    assert missing.returncode == 1
    assert f"{folder}/build/vagrant/user-data is missing" in missing.stderr
    assert "bakery render --target vagrant -o build/vagrant/user-data" in missing.stderr
    # Commands that do not boot the machine still work without user-data.
    assert "is missing" not in run_vagrantfile(folder, "destroy", "-f").stderr

    result = run_bakery(["render", "-c", EXAMPLE, "--target", "vagrant", "-o", folder / "build" / "vagrant" / "user-data",
                         "--secrets", tmp_path / "s.yaml"], home=workstation, cwd=folder)
    assert result.returncode == 0, result.stderr.decode()

    no_flag = run_vagrantfile(folder, "up")
    assert 'VAGRANT_EXPERIMENTAL="cloud_init,disks" vagrant up' in no_flag.stderr
    assert "experimental" in run_vagrantfile(folder, "up", experimental="cloud_init").stderr

    # Every check passed: the next thing the file needs is Vagrant itself.
    ready = run_vagrantfile(folder, "up", experimental="disks,cloud_init")
    assert "uninitialized constant Vagrant" in ready.stderr
    assert "bakery:" not in ready.stderr


def test_vagrantfile_refuses_non_cloud_config(tmp_path):
    (tmp_path / "Vagrantfile").write_bytes((REPO / "Vagrantfile").read_bytes())
    (tmp_path / "build" / "vagrant").mkdir(parents=True)
    (tmp_path / "build" / "vagrant" / "user-data").write_bytes(b"Content-Type: multipart/mixed\n")
    result = run_vagrantfile(tmp_path, "up", experimental="1")
    assert "does not start with #cloud-config" in result.stderr


def test_vagrantfile_matches_the_vagrant_target():
    from bakery.targets import TARGETS

    text = (REPO / "Vagrantfile").read_text()
    assert f"MEMORY_MIB = {TARGETS['vagrant'].memory_mib}" in text
    assert 'PRIVATE_IP = "192.168.33.10"' in text
