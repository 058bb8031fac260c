"""Bake vs boot: `bakery render --stage image|instance` and `bakery packer`.

The image stage is what every server started from a baked image shares, so
it must hold no generated secret and no host name; the instance stage is
the small per-server part, with its own secrets. Checked with the real
tools: cloud-init's schema, shellcheck, Packer, and the update command run
for real (prepare in the image, then a first boot without the network)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from bakery.pipeline import render_config
from bakery.steps import app as app_step
from bakery.steps import firstboot
from bakery.steps.firstboot import SCRIPT as FIRST_BOOT
from bakery.targets import SD_IMAGE, TARGETS, get_target

from conftest import REPO, first_boot_packages, require_tool, run_bakery
from stack_helpers import MICROBLOG_APP, public_key

EXAMPLE = REPO / "examples" / "microblog.yaml"
CLOUD_TARGETS = sorted(name for name, target in TARGETS.items() if not target.can(SD_IMAGE))


def render(tmp_path, home, *args, target="digitalocean", config=EXAMPLE) -> subprocess.CompletedProcess:
    return run_bakery(["render", "-c", config, "--target", target, "--secrets", tmp_path / "s.yaml", *args], home=home)


def rendered(tmp_path, home, *args, **kwargs) -> bytes:
    result = render(tmp_path, home, *args, **kwargs)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def files_of(user_data: bytes) -> dict:
    doc = yaml.safe_load(user_data)
    return {f["path"]: f["content"] for f in doc.get("write_files", [])}


def dotenv_of(user_data: bytes) -> dict:
    text = files_of(user_data)["/etc/bakery/microblog.env"]
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def shared_secrets_config(tmp_path) -> Path:
    """The example with ``secrets: shared``: the values come from the store."""
    config = tmp_path / "shared.yaml"
    config.write_text(EXAMPLE.read_text() + "\nsecrets: shared\n")
    return config


def secret_values(path: Path) -> list[str]:
    return list((yaml.safe_load(path.read_text()) or {}).values())


# --- cloud-init and shellcheck accept every stage -----------------------------

@pytest.mark.parametrize("target", CLOUD_TARGETS)
@pytest.mark.parametrize("stage", ["image", "instance"])
def test_cloud_init_schema_accepts_each_stage(target, stage, tmp_path, workstation, cloud_init_schema):
    args = ["--stage", stage] + (["--hostname", "web1"] if stage == "instance" else [])
    path = tmp_path / "user-data"
    path.write_bytes(rendered(tmp_path, workstation, *args, target=target))
    cloud_init_schema.assert_valid(path)


VARIANTS = {
    "microblog-mysql": {},
    # The site is named after the host (host.domain, no web.domain): per server.
    "postgresql-letsencrypt": dict(database={"engine": "postgresql"}, host={"hostname": "web", "domain": "example.com"},
                                   web={"tls": "letsencrypt", "email": "ops@example.com"}),
    "sqlite-no-nginx": dict(database={"engine": "sqlite"}, web={"nginx": False}, mail={"enabled": False}),
    "separate-user-http-only": dict(app={k: v for k, v in dict(MICROBLOG_APP, user="microblog").items() if k != "static"},
                                    web={"tls": "none"}),
    "search-locale": dict(search={"elasticsearch": True}, host={"hostname": "web", "locale": "en_GB.UTF-8"}),
}


def variant_config(tmp_path, name) -> Path:
    config = {"admin": {"name": "ubuntu", "ssh_keys": [public_key()]}, "host": {"hostname": "web"}, "app": MICROBLOG_APP}
    config.update(VARIANTS[name])
    path = tmp_path / "bakery.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stage_render(config: Path, stage: str, hostname=None, target="generic"):
    memory = 4096 if "search" in yaml.safe_load(config.read_text()) else None
    return render_config(config, get_target(target), memory_mib=memory, environ={}, home=config.parent,
                         stage=stage, hostname=hostname)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("stage", ["image", "instance"])
def test_each_stage_of_each_variant_passes_shellcheck_and_schema(variant, stage, tmp_path, cloud_init_schema):
    require_tool("shellcheck")
    config = variant_config(tmp_path, variant)
    result = stage_render(config, stage, "web1" if stage == "instance" else None)
    files = {f["path"]: f["content"] for f in result.cloud_config["write_files"]}
    scripts = {"first-boot.sh": files[FIRST_BOOT]}
    if stage == "image":
        scripts["update.sh"] = files["/usr/local/bin/microblog-update"]
    for name, text in scripts.items():
        path = tmp_path / name
        path.write_text(text)
        check = subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, f"{variant}/{stage}/{name}:\n{check.stdout}"
    from bakery.cloudconfig import to_yaml

    (tmp_path / "user-data").write_text(to_yaml(result.cloud_config))
    cloud_init_schema.assert_valid(tmp_path / "user-data")


# --- what goes where ------------------------------------------------------------

def test_image_holds_no_secret_and_no_host_name(tmp_path, workstation):
    # Secrets exist first (a full render and an instance), then the image is rendered.
    shared = shared_secrets_config(tmp_path)
    rendered(tmp_path, workstation, config=shared)
    rendered(tmp_path, workstation, "--stage", "instance", "--hostname", "web1", config=shared)
    store = tmp_path / "s.yaml"
    before = store.read_bytes()
    image = rendered(tmp_path, workstation, "--stage", "image", config=shared)
    assert store.read_bytes() == before  # the image stage generates no secret
    values = secret_values(store)
    assert len(values) == 4
    for value in values:
        assert value.encode() not in image
    doc = yaml.safe_load(image)
    assert not {"hostname", "fqdn", "manage_etc_hosts"} & set(doc)
    files = files_of(image)
    assert not [p for p in files if p.endswith((".env", "-db.sql")) or p.startswith("/etc/supervisor/")]
    assert "/usr/local/bin/microblog-update" in files and "/etc/nginx/sites-available/microblog" in files
    script = files[FIRST_BOOT]
    assert "microblog-update --prepare v0.17" in script
    for per_server in ("db_bootstrap", "openssl req", "sites-enabled/microblog", "supervisorctl", "myhostname"):
        assert per_server not in script
    # postfix is loopback-only in the image already: it starts at each boot.
    assert "postconf -e 'inet_interfaces = loopback-only'" in script
    assert doc["package_update"] is False and "default-mysql-server" in first_boot_packages(doc)


def test_instance_holds_the_per_server_part(tmp_path, workstation):
    instance = rendered(tmp_path, workstation, "--stage", "instance", "--hostname", "web1",
                        config=shared_secrets_config(tmp_path))
    doc = yaml.safe_load(instance)
    assert doc["hostname"] == "web1" and doc["manage_etc_hosts"] is True
    assert doc["package_update"] is False and "packages" not in doc
    assert doc["users"][0]["ssh_authorized_keys"]  # keys can be rotated per server
    store = yaml.safe_load((tmp_path / "s.yaml").read_text())
    env = dotenv_of(instance)
    assert env["SECRET_KEY"] == f"'{store['web1/microblog.secret_key']}'"
    assert store["web1/microblog.database_password"] in env["DATABASE_URL"]
    files = files_of(instance)
    assert store["web1/microblog.database_password"] in files["/etc/bakery/microblog-db.sql"]
    assert "/etc/supervisor/conf.d/microblog.conf" in files
    # Baked, so not sent again.
    assert "/usr/local/bin/microblog-update" not in files and "/etc/ssh/sshd_config.d/10-bakery.conf" not in files
    script = files[FIRST_BOOT]
    assert "microblog-update --prepared v0.17" in script
    assert "ufw " not in script and "locale-gen" not in script
    assert "/CN=web1" in script and "myhostname = web1" in script
    # The same path as the image's copy: the instance's script replaces it,
    # and the instance's bootcmd links the instance's own steps.
    assert "runcmd" not in doc
    assert "bakery-${n#1}-$step" in doc["bootcmd"][0][2] and "database app certificate nginx mail verdict" in doc["bootcmd"][0][2]
    # Its steps start early, from their own unit, once cloud-init's network
    # stage has written them; a whole server's wait for the config stage too
    # (apt's sources, passwords), not for cloud-final either.
    def early_run(bootcmd: str) -> str:
        return next(line for line in bootcmd.splitlines() if line.startswith("run -u bakery-first-boot "))

    assert "After=" not in early_run(doc["bootcmd"][0][2])
    assert "-p After=cloud-config.service" in early_run(yaml.safe_load(rendered(tmp_path, workstation))["bootcmd"][0][2])
    # Until the verdict, the steps and the services the site needs get the CPU first.
    weight = f"w=CPUWeight={firstboot.SERVING_CPU_WEIGHT}\n"
    assert weight in doc["bootcmd"][0][2] and " -p $w " in early_run(doc["bootcmd"][0][2])
    assert "SERVING=(mysql.service mariadb.service supervisor.service nginx.service)" in script
    # So do what they wait for: the cloud-init stage running the bootcmd (the
    # unit of its cgroup) and, on a whole server, the config stage and the
    # package fetch.
    stages = "for u in $(sed -n 's|^0::.*/||p' /proc/self/cgroup)"
    assert f"{stages}; do systemctl set-property --runtime \"$u\" $w; done" in doc["bootcmd"][0][2]
    whole = yaml.safe_load(rendered(tmp_path, workstation))["bootcmd"][0][2]
    assert weight in whole and f"{stages} cloud-config.service; do" in whole
    assert "run -u bakery-apt-prefetch -p $w " in whole
    # Small: it fits the smallest provider limit as rendered for that provider
    # (16 KiB) with its files still written one by one, not archived, and is
    # smaller than the full user-data.
    smallest = min(TARGETS.values(), key=lambda t: t.userdata_limit)
    fitted = rendered(tmp_path, workstation, "--stage", "instance", "--hostname", "web1", target=smallest.name,
                      config=shared_secrets_config(tmp_path))
    assert len(fitted) <= smallest.userdata_limit and "write_files" in yaml.safe_load(fitted)
    assert len(instance) < len(rendered(tmp_path, workstation, config=shared_secrets_config(tmp_path))) * 0.6


def test_each_instance_has_its_own_secrets_and_renders_the_same_twice(tmp_path, workstation):
    shared = shared_secrets_config(tmp_path)
    web1 = rendered(tmp_path, workstation, "--stage", "instance", "--hostname", "web1", config=shared)
    web2 = rendered(tmp_path, workstation, "--stage", "instance", "--hostname", "web2", config=shared)
    full = rendered(tmp_path, workstation, config=shared)
    env1, env2, env_full = dotenv_of(web1), dotenv_of(web2), dotenv_of(full)
    assert len({env1["SECRET_KEY"], env2["SECRET_KEY"], env_full["SECRET_KEY"]}) == 3
    assert len({env1["DATABASE_URL"], env2["DATABASE_URL"], env_full["DATABASE_URL"]}) == 3
    assert rendered(tmp_path, workstation, "--stage", "instance", "--hostname", "web1", config=shared) == web1
    # Without --hostname the instance is the config's host (microblog), again with its own secrets.
    own = rendered(tmp_path, workstation, "--stage", "instance", config=shared)
    assert yaml.safe_load(own)["hostname"] == "microblog" and dotenv_of(own)["SECRET_KEY"] != env_full["SECRET_KEY"]


def test_full_stage_is_the_default_output(tmp_path, workstation):
    assert rendered(tmp_path, workstation, "--stage", "full") == rendered(tmp_path, workstation)


def test_site_named_after_the_host_is_per_server(tmp_path):
    config = variant_config(tmp_path, "postgresql-letsencrypt")
    site = "/etc/nginx/sites-available/microblog"
    image = {f["path"] for f in stage_render(config, "image").cloud_config["write_files"]}
    instance = {f["path"]: f["content"] for f in stage_render(config, "instance", "web7").cloud_config["write_files"]}
    assert site not in image and "server_name web7.example.com;" in instance[site]
    plain = variant_config(tmp_path, "microblog-mysql")
    assert site in {f["path"] for f in stage_render(plain, "image").cloud_config["write_files"]}
    assert site not in {f["path"] for f in stage_render(plain, "instance", "web7").cloud_config["write_files"]}


def test_seed_for_an_instance_names_the_host(tmp_path, workstation):
    require_tool("isoinfo")
    seed = tmp_path / "web1.iso"
    result = run_bakery(["seed", "-c", EXAMPLE, "--target", "generic", "--secrets", tmp_path / "s.yaml",
                         "--stage", "instance", "--hostname", "web1", "-o", seed], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    meta = subprocess.run(["isoinfo", "-J", "-i", str(seed), "-x", "/meta-data"], capture_output=True, check=True).stdout
    assert b"local-hostname: web1" in meta


# --- refusals -------------------------------------------------------------------

def test_instance_without_a_host_name_is_a_usage_error(tmp_path, workstation):
    config = tmp_path / "bakery.yaml"
    config.write_text(EXAMPLE.read_text().replace("  hostname: microblog\n", ""))
    result = render(tmp_path, workstation, "--stage", "instance", config=config)
    assert result.returncode == 2
    assert b"--stage instance needs the server's host name: pass --hostname NAME" in result.stderr
    assert result.stdout == b"" and not (tmp_path / "s.yaml").exists()


@pytest.mark.parametrize("args, message", [
    (["--stage", "instance", "--hostname", "bad name!"], b"--hostname 'bad name!' is not a host name"),
    (["--hostname", "web_1"], b"is not a host name"),
    (["--stage", "image", "--hostname", "web1"], b"use it with --stage instance"),
    (["--stage", "staging"], b"Invalid value for '--stage'"),
])
def test_bad_stage_options_are_usage_errors(args, message, tmp_path, workstation):
    result = render(tmp_path, workstation, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert b"Traceback" not in result.stderr


# --- bakery packer bakes the image stage ----------------------------------------

@pytest.mark.parametrize("target", ["digitalocean", "generic"])
def test_packer_bakes_the_image_stage(target, tmp_path, workstation):
    from test_packer import validate, variables_for

    shared = shared_secrets_config(tmp_path)
    rendered(tmp_path, workstation, "--stage", "instance", "--hostname", "web1", config=shared)  # secrets exist
    folder = tmp_path / "packer"
    variables = [f"--var={k}={v}" for k, v in variables_for(target).items()]
    result = run_bakery(["packer", "-c", shared, "--target", target, "--secrets", tmp_path / "s.yaml", "-o", folder,
                         *variables], home=workstation)
    assert result.returncode == 0, result.stderr.decode()
    user_data = (folder / "user-data").read_bytes()
    assert user_data == rendered(tmp_path, workstation, "--stage", "image", target=target, config=shared)
    for value in secret_values(tmp_path / "s.yaml"):
        assert value.encode() not in user_data
    readme = (folder / "README.md").read_text()
    assert f"bakery render --stage instance --hostname web1 --target {target} -o web1.user-data" in readme
    check = validate(folder, target)
    assert check.returncode == 0, check.stdout + check.stderr


# --- the update command: prepared in the image, finished offline on first boot ---

def test_prepare_in_the_image_then_first_boot_without_the_network(tmp_path, request):
    from test_update_command import Server, commit_app, git

    server = Server(tmp_path)
    request.addfinalizer(server.stop)
    server.plan.stage = "image"  # the update command a baked image carries
    server.rewrite()
    v1 = commit_app(server.origin, "one", "fixture-dep==1.0", "v1")
    git(server.origin, "tag", "v1")
    app_dir = Path(server.app.dir)
    migrate_log = Path(server.app.data_dir) / "migrate.log"

    bake = server.update("--prepare", "v1")
    assert bake.returncode == 0, bake.stdout + bake.stderr
    # A release of its own, with code and venv only: not current, no .env,
    # no migration, nothing asked of supervisor.
    [release] = server.releases()
    assert (Path(server.app.base) / "releases" / release / "venv" / ".bakery-prepared").read_text() == f"v1 {v1}\n"
    assert not os.path.lexists(app_dir) and not migrate_log.exists()
    assert not (Path(server.app.base) / "releases" / release / ".env").exists()
    assert server.supervisorctl() == []

    # The server started from the image: the origin is out of reach.
    server.origin.rename(tmp_path / "unreachable")
    boot = server.update("--prepared", "v1")
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert f"{release} was prepared: no fetch, no pip install" in boot.stdout
    assert server.head() == v1 and server.installed() == "1.0" and server.serves() == "one"
    assert server.current() == f"releases/{release}"
    assert (app_dir / ".env").exists() and migrate_log.read_text() == "1.0\n"
    assert server.supervisorctl() == ["update", "start fixture"]

    # A ref the image was not prepared for is fetched as usual (and fails here, offline).
    other = server.update("--prepared", "main")
    assert other.returncode != 0 and server.head() == v1
    (tmp_path / "unreachable").rename(server.origin)
    v2 = commit_app(server.origin, "two", "fixture-dep==2.0", "v2")
    later = server.update("main")  # the admin's own update later on
    assert later.returncode == 0, later.stdout + later.stderr
    assert server.head() == v2 and server.installed() == "2.0"


def test_instance_names_what_cloud_init_resets_on_each_new_instance(tmp_path):
    # cloud-init's apt and locale modules run again on every new instance:
    # without these in the instance stage they would undo the image's apt
    # proxy and its locale. Its mounts module leaves the image's swap line
    # alone when the instance names no mounts, and since cloud-init 24 adds
    # a second one when it names the swap file again: the image alone does.
    config = variant_config(tmp_path, "search-locale")
    data = yaml.safe_load(config.read_text())
    data["network"] = {"apt_proxy": "http://apt-cache.internal:3142"}
    data["swap"] = "2G"
    config.write_text(yaml.safe_dump(data))
    instance = stage_render(config, "instance", "web1").cloud_config
    assert "swap" not in instance and "mounts" not in instance
    assert stage_render(config, "image", None).cloud_config["swap"] == {
        "filename": "/swapfile", "size": "2G", "maxsize": "2G"}
    assert instance["apt"] == {"proxy": "http://apt-cache.internal:3142"}
    script = {f["path"]: f["content"] for f in instance["write_files"]}[FIRST_BOOT]
    assert "update-locale LANG=en_GB.UTF-8" in script
    assert "timezone" not in instance and "packages" not in instance

