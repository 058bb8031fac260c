"""The core contract: bakery.yaml in, valid cloud-init user-data out, and
clear errors (file:line:col, key path, suggestion, exit 2) for bad input."""

from __future__ import annotations

import base64
import email
import gzip
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, first_boot_packages, make_public_key, require_tool, run_bakery, write_files

EXAMPLE = REPO / "examples" / "microblog.yaml"
from bakery.cloudconfig import UNPACK, b94decode, b94encode, comment_markers  # noqa: E402
from bakery.targets import TARGETS  # noqa: E402

BASE = """\
admin:
  name: alice
host:
  hostname: web1
"""


def write(tmp_path: Path, text: str, name: str = "bakery.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def render(cfg: Path, home: Path, *extra, target: str = "generic") -> subprocess.CompletedProcess:
    return run_bakery(["render", "-c", cfg, "--target", target, *extra], home=home)


def stderr(result) -> str:
    return result.stderr.decode()


# --- every target renders valid cloud-config -------------------------------

@pytest.mark.parametrize("target", [t for t in TARGETS])
def test_example_passes_cloud_init_schema_on_every_target(target, tmp_path, workstation, cloud_init_schema):
    out = tmp_path / "user-data"
    result = run_bakery(["render", "-c", EXAMPLE, "--target", target, "-o", out, "--secrets", tmp_path / "s.yaml"], home=workstation)
    assert result.returncode == 0, stderr(result)
    assert out.read_text().startswith("#cloud-config\n")
    cloud_init_schema.assert_valid(out)


def test_cloud_init_schema_check_can_fail(tmp_path, cloud_init_schema):
    bad = tmp_path / "bad"
    bad.write_text("#cloud-config\nwrite_files:\n- path: /x\n  permissions: 0644\n")  # unquoted mode is an int
    result = cloud_init_schema.run(bad)
    assert result.returncode != 0
    assert "permissions" in result.stderr + result.stdout


def test_base_server_shape(tmp_path, workstation):
    cfg = write(tmp_path, BASE)
    result = render(cfg, workstation)
    assert result.returncode == 0, stderr(result)
    doc = yaml.safe_load(result.stdout)
    user = doc["users"][0]
    key = (workstation / ".ssh" / "id_ed25519.pub").read_text().strip()
    assert user["name"] == "alice" and user["lock_passwd"] is True
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["ssh_authorized_keys"] == [key]
    assert doc["disable_root"] is True and doc["ssh_pwauth"] is False
    # First boot installs the packages, not cloud-init's package module.
    assert doc["package_update"] is False and "ufw" in first_boot_packages(doc)
    assert doc["manage_etc_hosts"] is True and doc["hostname"] == "web1"
    # stdout holds only the artifact; the key note goes to stderr
    assert "using SSH public key" in stderr(result) and "using SSH" not in result.stdout.decode()
    script = write_files(doc)["/usr/local/lib/bakery/first-boot.sh"]
    assert script.index("ufw limit 22/tcp") < script.index("ufw --force enable")


def test_memory_switches_swap(tmp_path, workstation):
    cfg = write(tmp_path, BASE)
    small = yaml.safe_load(render(cfg, workstation, target="lightsail").stdout)
    big = yaml.safe_load(render(cfg, workstation, "--memory", "4G", target="lightsail").stdout)
    assert small["swap"]["size"] == "1G"
    assert "swap" not in big


def test_postfix_is_preseeded(tmp_path, workstation):
    doc = yaml.safe_load(render(EXAMPLE, workstation, "--secrets", tmp_path / "s.yaml").stdout)
    script = write_files(doc)["/usr/local/lib/bakery/first-boot.sh"]
    assert "postfix postfix/main_mailer_type select Internet Site" in script
    assert script.index("debconf-set-selections") < script.index("retry apt_install")
    assert "default-mysql-server" in first_boot_packages(doc)


# --- sshd accepts the drop-in ------------------------------------------------

def test_sshd_accepts_rendered_dropin(tmp_path, workstation):
    sshd = require_tool("sshd")
    if not os.path.isdir("/run/sshd") and os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755)  # sshd -t insists on its privilege separation dir
    doc = yaml.safe_load(render(write(tmp_path, BASE), workstation).stdout)
    dropin = next(f for f in doc["write_files"] if f["path"].startswith("/etc/ssh/sshd_config.d/"))
    assert os.path.basename(dropin["path"]) < "50-cloud-init.conf"
    (tmp_path / "10-bakery.conf").write_text(dropin["content"])
    hostkey = tmp_path / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey], check=True)
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {tmp_path}/10-bakery.conf\nHostKey {hostkey}\nPermitRootLogin yes\nPasswordAuthentication yes\n")
    checked = subprocess.run([sshd, "-t", "-f", main], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    effective = subprocess.run([sshd, "-T", "-f", main, "-C", "user=alice,host=x,addr=127.0.0.1"], capture_output=True, text=True)
    assert effective.returncode == 0, effective.stderr
    lines = effective.stdout.splitlines()
    assert "permitrootlogin no" in lines
    assert "passwordauthentication no" in lines
    assert "kbdinteractiveauthentication no" in lines


# --- errors a person can act on ---------------------------------------------

def test_typos_are_all_reported_with_position_and_suggestion(tmp_path, workstation):
    cfg = write(tmp_path, BASE + "databse:\n  engine: mysql\napp:\n  repo: https://example.com/x.git\n  reff: main\n")
    result = render(cfg, workstation)
    err = stderr(result)
    assert result.returncode == 2
    assert f"{cfg}:5:1: databse: unknown key 'databse'; did you mean 'database'?" in err
    assert f"{cfg}:9:3: app.reff: unknown key 'reff'; did you mean 'ref'?" in err
    assert "Traceback" not in err and result.stdout == b""


def test_yaml_syntax_error_has_line(tmp_path, workstation):
    cfg = write(tmp_path, "admin:\n  name: [alice\n")
    result = render(cfg, workstation)
    assert result.returncode == 2
    assert f"{cfg}:3:1: YAML syntax error" in stderr(result)
    assert "Traceback" not in stderr(result)


def test_wrong_types_and_values(tmp_path, workstation):
    cfg = write(tmp_path, "host:\n  hostname: 'bad_name!'\nfirewall:\n  enabled: sometimes\ndatabase:\n  engine: mysq\n")
    err = stderr(render(cfg, workstation))
    assert f"{cfg}:2:3: host.hostname: 'bad_name!' is not a valid host name" in err
    assert f"{cfg}:4:3: firewall.enabled: expected true or false, got 'sometimes'" in err
    assert "database.engine: expected one of mysql, postgresql, sqlite, none; got 'mysq'; did you mean 'mysql'?" in err


def test_duplicate_key_is_an_error(tmp_path, workstation):
    cfg = write(tmp_path, "admin:\n  name: a\nadmin:\n  name: b\n")
    result = render(cfg, workstation)
    assert result.returncode == 2 and f"{cfg}:3:1: admin: duplicate key" in stderr(result)


def test_missing_config_file(tmp_path, workstation):
    result = run_bakery(["render"], home=workstation, cwd=tmp_path)
    assert result.returncode == 2
    assert "bakery.yaml: file not found" in stderr(result)


def test_unknown_target_suggests(tmp_path, workstation):
    result = render(write(tmp_path, BASE), workstation, target="digitalocen")
    assert result.returncode == 2 and "did you mean 'digitalocean'" in stderr(result)


def test_private_key_inline_is_refused_without_echo(tmp_path, workstation):
    _, private = make_public_key()
    text = private.decode()
    cfg = write(tmp_path, "admin:\n  ssh_keys:\n    - |\n" + "".join("      " + ln + "\n" for ln in text.splitlines()))
    result = render(cfg, workstation)
    err = stderr(result)
    assert result.returncode == 2 and "PRIVATE key" in err
    body = text.splitlines()[1]
    assert body not in err and body.encode() not in result.stdout


def test_private_key_file_is_refused_without_echo(tmp_path, workstation):
    _, private = make_public_key("ecdsa")
    (tmp_path / "id_ecdsa").write_bytes(private)
    cfg = write(tmp_path, "admin:\n  ssh_keys: [id_ecdsa]\n")
    result = render(cfg, workstation)
    assert result.returncode == 2 and "is a PRIVATE key file" in stderr(result)
    assert private.decode().splitlines()[1] not in stderr(result)


@pytest.mark.parametrize("key,expected", [
    ("ssh-ed25519 AAAAnotbase64!!", "not a valid OpenSSH public key"),
    ("ssh-rsa", "not an OpenSSH public key"),
])
def test_invalid_public_keys_are_refused(tmp_path, workstation, key, expected):
    cfg = write(tmp_path, f"admin:\n  ssh_keys: ['{key}']\n")
    result = render(cfg, workstation)
    assert result.returncode == 2 and expected in stderr(result)


def test_weak_rsa_key_is_refused(tmp_path, workstation):
    public, _ = make_public_key("rsa1024")
    cfg = write(tmp_path, f"admin:\n  ssh_keys: ['{public}']\n")
    result = render(cfg, workstation)
    assert result.returncode == 2 and "RSA key of 1024 bits is too weak" in stderr(result)


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa2048"])
def test_valid_key_kinds_and_key_files(tmp_path, workstation, kind):
    public, _ = make_public_key(kind)
    (tmp_path / "me.pub").write_text(public + "\n")
    cfg = write(tmp_path, f"admin:\n  ssh_keys: ['{public}', me.pub]\n")
    result = render(cfg, workstation)
    assert result.returncode == 0, stderr(result)
    assert yaml.safe_load(result.stdout)["users"][0]["ssh_authorized_keys"] == [public, public]


def test_lockout_is_refused_with_how_to_create_a_key(tmp_path):
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    result = render(write(tmp_path, BASE), empty_home)
    assert result.returncode == 2
    assert "no SSH public key" in stderr(result) and "ssh-keygen -t ed25519" in stderr(result)


def test_ssh_import_id_is_enough(tmp_path):
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    result = render(write(tmp_path, "admin:\n  ssh_import_id: [gh:alice]\n"), empty_home)
    assert result.returncode == 0, stderr(result)
    assert yaml.safe_load(result.stdout)["users"][0]["ssh_import_id"] == ["gh:alice"]


def test_default_key_order_prefers_ed25519(tmp_path, workstation):
    ecdsa, _ = make_public_key("ecdsa")
    (workstation / ".ssh" / "id_ecdsa.pub").write_text(ecdsa + "\n")
    result = render(write(tmp_path, BASE), workstation)
    assert str(workstation / ".ssh" / "id_ed25519.pub") in stderr(result)
    (workstation / ".ssh" / "id_ed25519.pub").unlink()
    result = render(write(tmp_path, BASE), workstation)
    assert str(workstation / ".ssh" / "id_ecdsa.pub") in stderr(result)
    assert yaml.safe_load(result.stdout)["users"][0]["ssh_authorized_keys"] == [ecdsa]


def test_size_limit_is_enforced_with_hint(tmp_path, workstation):
    # In the users entry: bakery cannot pack it, as it packs large files.
    many = "".join(f"    - gh:user{i:04d}-with-a-long-name-to-fill-space\n" for i in range(900))
    cfg = write(tmp_path, BASE.replace("admin:\n", "admin:\n  ssh_import_id:\n" + many, 1))
    result = render(cfg, workstation, target="ec2")
    assert result.returncode == 2  # the config does not fit the target
    err = stderr(result)
    assert "over ec2's limit of 16384 bytes" in err and "--format gzip-base64" in err
    assert result.stdout == b""
    packed = render(cfg, workstation, "--format", "gzip-base64", target="ec2")
    assert packed.returncode == 0, stderr(packed)
    linode = render(cfg, workstation, target="linode")
    assert linode.returncode == 2 and "does not accept compressed" in stderr(linode)


def test_to_fit_16_kib_the_scripts_lose_only_their_comment_lines(tmp_path, workstation):
    require_tool("shellcheck")
    secrets = tmp_path / "s.yaml"
    example = REPO / "examples" / "microblog.yaml"
    full = render(example, workstation, "--secrets", secrets, target="generic")
    small = render(example, workstation, "--secrets", secrets, target="linode")
    assert small.returncode == 0 and len(small.stdout) <= 16_384, stderr(small)
    whole, fitted = write_files(yaml.safe_load(full.stdout)), write_files(yaml.safe_load(small.stdout))
    stripped = [path for path in whole if fitted[path] != whole[path]]
    assert "/usr/local/lib/bakery/first-boot.sh" in stripped
    for path in stripped:
        # A script's comments start with "#"; a configuration file's with its folder's markers.
        markers = comment_markers(path) or ("#",)
        kept = iter(whole[path].splitlines())
        for line in fitted[path].splitlines():  # the fitted lines, in order, are the original's
            removed = []
            for original in kept:
                if original == line:
                    break
                removed.append(original)
            assert all(not r.strip() or r.strip().startswith(markers) for r in removed), removed
        if not whole[path].startswith("#!/bin/"):
            continue  # a configuration file (sshd's, nginx's): its comment lines alone went
        script = tmp_path / path.rsplit("/", 1)[-1]
        script.write_text(fitted[path])
        check = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
    assert "BAKERY_DEBCONF" in fitted["/usr/local/lib/bakery/first-boot.sh"]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64))
def test_the_archive_s_text_carries_any_bytes_through_yaml_and_the_server_s_unpacker(data):
    """base 94: what bakery decodes and what the unpacker run on the server
    decodes is what was encoded, also after a YAML block and a here-document."""
    text = b94encode(data)
    assert set(text) <= {chr(c) for c in range(33, 127)} and len(text) == 1 + 11 * -(-len(data) // 9)
    block = yaml.safe_load(yaml.safe_dump({"c": f"cat <<'X'\n{text}\nX\n"}, default_style="|"))["c"]
    assert b94decode(block.split("\n")[1]) == data
    # The unpacker's own decoding, up to the LZMA step.
    decode = UNPACK.split("r,d=")[0] + "sys.stdout.buffer.write(d[:len(d)-s[0]+48])\n"
    done = subprocess.run(["python3", "-c", decode], input=text.encode(), capture_output=True, check=True)
    assert done.stdout == data


# --- environment references --------------------------------------------------

def test_env_references(tmp_path, workstation):
    cfg = write(tmp_path, BASE + "app:\n  repo: https://example.com/app.git\n  dotenv:\n    KEY: ${MY_KEY}\n    OTHER: ${UNSET_ONE:-fallback}\n    LITERAL: $NOT_EXPANDED\n")
    ok = run_bakery(["render", "-c", cfg], home=workstation, env={"MY_KEY": "s3cr3t"})
    assert ok.returncode == 0, stderr(ok)
    text = ok.stdout.decode()
    assert "KEY='s3cr3t'" in text and "OTHER='fallback'" in text and "LITERAL='$NOT_EXPANDED'" in text
    missing = run_bakery(["render", "-c", cfg], home=workstation)
    assert missing.returncode == 2
    assert f"{cfg}:8:10: app.dotenv.KEY: environment variable MY_KEY is not set" in stderr(missing)


# --- secrets and determinism ------------------------------------------------

def test_secrets_are_born_on_the_server_by_default(tmp_path, workstation):
    cfg = write(tmp_path, (EXAMPLE).read_text())
    first = render(cfg, workstation)
    assert first.returncode == 0, stderr(first)
    assert not (tmp_path / "bakery.secrets.yaml").exists()
    doc = yaml.safe_load(first.stdout)
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    assert "SECRET_KEY='BAKERY_SECRET__microblog_secret_key__'" in files["/etc/bakery/microblog.env"]
    assert "IDENTIFIED BY 'BAKERY_SECRET__microblog_database_password__'" in files["/etc/bakery/microblog-db.sql"]
    assert render(cfg, workstation).stdout == first.stdout


def test_secrets_file_is_private_and_reused(tmp_path, workstation):
    cfg = write(tmp_path, (EXAMPLE).read_text() + "\nsecrets: shared\n")
    first = render(cfg, workstation)
    assert first.returncode == 0, stderr(first)
    secrets = tmp_path / "bakery.secrets.yaml"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    stored = yaml.safe_load(secrets.read_text())
    assert set(stored) == {"microblog.secret_key", "microblog.database_password"}
    assert all(len(v) >= 32 for v in stored.values())
    second = render(cfg, workstation)
    assert first.stdout == second.stdout
    assert stored["microblog.database_password"] in first.stdout.decode()
    other = tmp_path / "elsewhere.yaml"
    moved = render(cfg, workstation, "--secrets", other)
    assert moved.stdout != first.stdout and other.exists()


def test_loose_secrets_file_is_refused(tmp_path, workstation):
    cfg = write(tmp_path, BASE)
    secrets = tmp_path / "bakery.secrets.yaml"
    secrets.write_text("x: y\n")
    secrets.chmod(0o644)
    result = render(cfg, workstation)
    assert result.returncode == 1 and "chmod 600" in stderr(result)


def test_failed_render_writes_nothing(tmp_path, workstation):
    cfg = write(tmp_path, BASE + "app:\n  repo: https://example.com/app.git\nsearch:\n  elasticsearch: true\n")
    out = tmp_path / "user-data"
    result = render(cfg, workstation, "-o", out, target="digitalocean")
    assert result.returncode == 2 and "Elasticsearch needs more than 2 GiB" in stderr(result)
    assert not out.exists() and not (tmp_path / "bakery.secrets.yaml").exists()
    bigger = render(cfg, workstation, "-o", out, "--memory", "4G", target="digitalocean")
    assert bigger.returncode == 0, stderr(bigger)


def test_output_file_is_atomic_and_private(tmp_path, workstation):
    out = tmp_path / "out" / "user-data"
    result = render(write(tmp_path, BASE), workstation, "-o", out)
    assert result.returncode == 0 and result.stdout == b""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["user-data"]


# --- output formats ----------------------------------------------------------

def test_mime_format(tmp_path, workstation):
    cfg = write(tmp_path, BASE)
    plain = render(cfg, workstation).stdout.decode()
    mime = render(cfg, workstation, "--format", "mime")
    message = email.message_from_bytes(mime.stdout)
    assert message.is_multipart()
    parts = [p for p in message.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/cloud-config"]
    assert parts[0].get_payload(decode=True).decode() == plain
    assert render(cfg, workstation, "--format", "mime").stdout == mime.stdout


def test_gzip_base64_round_trips(tmp_path, workstation):
    cfg = write(tmp_path, BASE)
    plain = render(cfg, workstation).stdout
    packed = render(cfg, workstation, "--format", "gzip-base64").stdout
    assert gzip.decompress(base64.b64decode(packed)) == plain
    assert render(cfg, workstation, "--format", "gzip-base64").stdout == packed


# --- the other commands ----------------------------------------------------

def test_targets_table(workstation):
    result = run_bakery(["targets"], home=workstation)
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert lines[0].split()[:3] == ["TARGET", "DISTRO", "ADMIN"]
    names = [ln.split()[0] for ln in lines[1:]]
    assert names == list(TARGETS)
    row = next(ln for ln in lines if ln.startswith("lightsail"))
    assert "512 MiB" in row and "16384 B" in row and row.split()[-1] == "amazon-ebs"
    pi = next(ln for ln in lines if ln.startswith("raspberry-pi")).split()
    assert pi[2] == "pi" and pi[-1] == "-"


def test_validate_command(tmp_path, workstation):
    ok = run_bakery(["validate", "-c", EXAMPLE, "--target", "ec2", "--secrets", tmp_path / "s.yaml"], home=workstation)
    assert ok.returncode == 0, stderr(ok)
    assert "config valid for target ec2" in stderr(ok) and ok.stdout == b""
    bad = run_bakery(["validate", "-c", write(tmp_path, "admn: {}\n")], home=workstation)
    assert bad.returncode == 2 and "did you mean 'admin'" in stderr(bad)


def test_help_and_bad_usage(workstation):
    assert run_bakery(["--help"], home=workstation).returncode == 0
    bad = run_bakery(["render", "--format", "xml"], home=workstation)
    assert bad.returncode == 2 and "Traceback" not in stderr(bad)
    mem = run_bakery(["render", "--memory", "lots"], home=workstation)
    assert mem.returncode == 2 and "--memory" in stderr(mem)


def test_reserved_login_variables_are_refused(tmp_path, workstation):
    cfg = write(tmp_path, BASE + "app:\n  repo: https://example.com/app.git\n  environment:\n    PATH: /tmp\n")
    result = render(cfg, workstation)
    assert result.returncode == 2
    assert f"{cfg}:8:5: app.environment.PATH: PATH is set by the login shell" in stderr(result)
