"""Packer output: a ready-to-build folder that bakes a bakery server into a
reusable image (a DigitalOcean or Hetzner snapshot, an AMI, a qcow2 disk).

Owns the builders (each target's row names its own), the variables file (and its HCL string
quoting: the one escape for HCL string literals), and the folder's README.
The templates themselves live in ``packer/`` and are copied unchanged.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

from bakery.errors import UsageError
from bakery.fsutil import atomic_write
from bakery.outputs.seed import meta_data
from bakery.resources import data_path
from bakery.targets import TARGETS, Target

VARS_FILE = "bakery.auto.pkrvars.hcl"
SCRIPTS = ("wait-for-cloud-init.sh", "clean-image.sh")

Value = Union[str, int, bool]


@dataclass(frozen=True)
class Builder:
    name: str  # Packer builder type, also the template's file name
    plugin: str  # plugin name for modern Packer's `packer init`
    credentials: Optional[str]  # what the build reads from the environment
    image_kind: str


BUILDERS: dict[str, Builder] = {
    b.name: b
    for b in [
        Builder("digitalocean", "digitalocean", "DIGITALOCEAN_API_TOKEN", "DigitalOcean snapshot"),
        Builder("amazon-ebs", "amazon", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)", "Amazon Machine Image (AMI)"),
        Builder("hcloud", "hcloud", "HCLOUD_TOKEN", "Hetzner Cloud snapshot"),
        Builder("qemu", "qemu", None, "qcow2 disk image"),
    ]
}

# Secrets never go to a file in the Packer folder: each template reads them
# from the environment (env() in the variable's default).
SECRET_VARIABLES = {"api_token", "hcloud_token"}

VARIABLE_HINTS = {
    "source_image_checksum": (
        "the cloud image's digest as sha512:<hex>, from the SHA512SUMS file published beside "
        "the image (pin a dated image with source_image_url: the latest one changes)"
    ),
    "ssh_username": "the admin user the user-data creates, whom Packer logs in as",
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_VARIABLE_BLOCK = re.compile(r'^variable "([^"]+)" \{\n(.*?)^\}', re.M | re.S)


def builder_for(target: Target) -> Builder:
    """The Packer builder that bakes ``target``; UsageError when there is none."""
    if target.packer is None:
        known = ", ".join(t.name for t in TARGETS.values() if t.packer)
        raise UsageError(f"no Packer template for target '{target.name}': "
                         f"{target.no_packer or 'Packer targets: ' + known}")
    return BUILDERS[target.packer]


def hcl_string(value: str) -> str:
    """``value`` as an HCL2 quoted string literal that reads back unchanged.

    Control characters other than newline, carriage return and tab are refused:
    no configuration value needs them, and they would hide in a file people read.
    """
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif unicodedata.category(ch) == "Cc":
            raise UsageError(f"a Packer variable cannot hold the control character U+{ord(ch):04X}")
        else:
            out.append(ch)
    text = "".join(out)
    # "${" and "%{" open template sequences inside HCL strings; "$${" and "%%{"
    # are their literal forms.
    text = text.replace("${", "$${").replace("%{", "%%{")
    return f'"{text}"'


def hcl_value(value: Value) -> str:
    """An HCL literal for a variables file: string, whole number or boolean."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return hcl_string(value)
    raise UsageError(f"a Packer variable must be a string, a whole number or a boolean, not {type(value).__name__}")


def render_vars_file(variables: Mapping[str, Value]) -> str:
    """The ``*.auto.pkrvars.hcl`` text, formatted the way ``packer fmt`` wants it
    (equal signs aligned), in a stable order."""
    lines = ["# Non-secret settings for this build, written by bakery.", ""]
    if variables:
        width = max(len(name) for name in variables)
        for name in sorted(variables):
            if not _NAME.match(name):
                raise UsageError(f"invalid Packer variable name {name!r}")
            lines.append(f"{name.ljust(width)} = {hcl_value(variables[name])}")
    return "\n".join(lines) + "\n"


def declared_variables(template: str) -> dict[str, bool]:
    """Variable name -> whether it has a default, read from a template we ship."""
    return {name: bool(re.search(r"^\s*default\s*=", body, re.M)) for name, body in _VARIABLE_BLOCK.findall(template)}


def write(rendered, out_dir: Path, assignments=()) -> str:
    """The Packer folder for ``rendered`` (the image stage) in ``out_dir``,
    with ``assignments`` ("NAME=VALUE") as template variables; what was written."""
    from .userdata import user_data

    variables: dict = {"ssh_username": None}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--var expects NAME=VALUE, got {item!r}")
        variables[name] = value
    variables["ssh_username"] = variables.get("ssh_username") or rendered.plan.admin.name
    written = write_packer_dir(out_dir, rendered.plan.target, user_data(rendered), variables)
    return f"wrote {len(written)} files to {out_dir}; see {Path(out_dir) / 'README.md'}"


# The first words of every template bakery writes (packer/*.pkr.hcl).
BAKERY_TEMPLATE_MARK = b"# Bakes a bakery server into"


def write_packer_dir(
    out_dir: Path,
    target: Target,
    user_data: bytes,
    variables: Mapping[str, Value],
    *,
    hostname: str = "bakery-image",
) -> list[Path]:
    """Write a Packer folder for ``target`` into ``out_dir``; return the paths written.

    ``variables`` are the non-secret template variables (``ssh_username`` is
    required; ``region``, ``size``, ``image``... as the template declares them).
    ``hostname`` goes to the NoCloud meta-data of the qemu builder's CD.
    """
    builder = builder_for(target)
    if not user_data:
        raise UsageError("the user-data to bake is empty")
    source = data_path("packer")
    template_name = f"{builder.name}.pkr.hcl"
    template = (source / template_name).read_text(encoding="utf-8")
    _check_variables(builder, template, variables)

    files: list[tuple[str, bytes, int]] = [
        (template_name, template.encode("utf-8"), 0o644),
        ("plugins.pkr.hcl", (source / "plugins" / template_name).read_bytes(), 0o644),
    ]
    for script in SCRIPTS:
        files.append((f"scripts/{script}", (source / "scripts" / script).read_bytes(), 0o755))
    # The image stage holds no generated secret, but it may carry settings
    # from the config (e.g. .env values) that are private.
    files.append(("user-data", bytes(user_data), 0o600))
    if builder.name == "qemu":
        files.append(("meta-data", meta_data("bakery-image-build", hostname), 0o600))
    files.append((VARS_FILE, render_vars_file(variables).encode("utf-8"), 0o644))
    files.append(("README.md", _readme(target, builder, template_name).encode("utf-8"), 0o644))

    out_dir = Path(out_dir)
    # `packer build .` loads every template in the folder: one left from an
    # earlier run for another builder would be built too.
    # Only bakery's own is removed: a template of the user's is theirs to move.
    for other in BUILDERS:
        stale = out_dir / f"{other}.pkr.hcl"
        if other == builder.name or not stale.is_file():
            continue
        if not stale.read_bytes().startswith(BAKERY_TEMPLATE_MARK):
            raise UsageError(f"{out_dir} holds {stale.name}, which bakery did not write, and `packer build .` "
                             "would build it too: move it away or choose another folder with -o")
        stale.unlink()

    written = []
    for name, data, mode in files:
        path = out_dir / name
        atomic_write(path, data, mode=mode)
        written.append(path)
    return written


def _check_variables(builder: Builder, template: str, variables: Mapping[str, Value]) -> None:
    declared = declared_variables(template)
    for name in variables:
        if name in SECRET_VARIABLES:
            raise UsageError(
                f"Packer variable '{name}' is a secret: it is read from {builder.credentials} "
                "in the environment, never written to a file"
            )
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UsageError(
                f"the {builder.name} template has no variable '{name}'{hint}; "
                f"its variables: {', '.join(sorted(set(declared) - SECRET_VARIABLES))}"
            )
    missing = sorted(name for name, has_default in declared.items() if not has_default and name not in variables)
    if missing:
        hints = "".join(f"\n  {name}: {VARIABLE_HINTS[name]}" for name in missing if name in VARIABLE_HINTS)
        raise UsageError(f"the {builder.name} template needs a value for: {', '.join(missing)}{hints}")
    for name, value in variables.items():
        hcl_value(value)  # refuse what HCL cannot hold before anything is written


START_EXAMPLES = {
    "digitalocean": "doctl compute droplet create web1 --image <snapshot-id> --size s-1vcpu-1gb --region nyc3 \\\n"
                    "  --user-data-file web1.user-data",
    "amazon-ebs": "aws ec2 run-instances --image-id <ami-id> --instance-type t3.small \\\n"
                  "  --user-data file://web1.user-data",
    "hcloud": "hcloud server create --name web1 --image <snapshot-id> --type cx22 --user-data-from-file web1.user-data",
    "qemu": "bakery seed --stage instance --hostname web1 --target {target} -o web1-seed.iso\n"
            "qemu-img create -f qcow2 -F qcow2 -b output-bakery/bakery.qcow2 web1.qcow2   # the image as backing file\n"
            "qemu-system-x86_64 -m 1024 -drive file=web1.qcow2,if=virtio -cdrom web1-seed.iso ...",
}


def _start_example(target: Target) -> list[str]:
    example = START_EXAMPLES[target.packer].format(target=target.name)
    return ["For example:", "", "```sh", *example.split("\n"), "```", ""]


def _readme(target: Target, builder: Builder, template_name: str) -> str:
    if builder.credentials:
        credentials = f"It reads the credentials from the environment: {builder.credentials}."
    else:
        credentials = "It needs no cloud credentials; it runs QEMU on this machine (with xorriso or genisoimage for the seed CD)."
    lines = [
        f"# Packer build: {target.name} ({builder.image_kind})",
        "",
        f"Bakes the image stage of the server (`user-data`, rendered by `bakery packer`) into a {builder.image_kind}:",
        "the packages, firewall, SSH settings, app user, the app checked out at its ref and its virtualenv.",
        "It holds nothing that must differ per server: no host name, no `.env` or other secret, no",
        "database for the app, no certificate; the app is not started.",
        "",
        credentials,
        "Packer logs in as `ssh_username` with the SSH key of your config: load it into",
        "ssh-agent (`ssh-add`) or set `ssh_private_key_file` in `" + VARS_FILE + "`.",
        "",
        "Build (Packer 1.7 or later; `packer init` installs the plugin named in `plugins.pkr.hcl`):",
        "",
        "```sh",
        "packer init .",
        "packer build .",
        "```",
        "",
        "With Packer 1.6 (builders built in, no `packer init`), build the template by name:",
        "",
        "```sh",
        f"packer build -var-file={VARS_FILE} {template_name}",
        "```",
        "",
        "The build waits for cloud-init to finish and stops if cloud-init reported an error.",
        "It then removes cloud-init's state, SSH host keys, the machine id and the logs, so every",
        "server started from the image is a new cloud-init instance.",
        "",
        *_readme_servers(target),
    ]
    if builder.name == "qemu":
        lines += [
            "",
            "`source_image_checksum` must be set in `" + VARS_FILE + "` (\"sha512:<hex>\"), for",
            "example the line for the image in the SHA512SUMS file published beside it.",
        ]
    if target.name == "lightsail":
        lines += [
            "",
            "Lightsail cannot start instances from an AMI: this builds an EC2 image. For Lightsail,",
            "paste the user-data as the instance's launch script instead.",
        ]
    return "\n".join(lines) + "\n"


def _readme_servers(target: Target) -> list[str]:
    """The README's part on starting servers from the built image."""
    return [
        "## Starting servers from the image",
        "",
        "Each server gets its own small user-data, the instance stage: its host name, its own",
        "`SECRET_KEY` and database password (kept in the secrets file under its name), the `.env`,",
        "the database, a certificate made on the server, migrations, and the app started. Render",
        "one per server, from the folder that holds `bakery.yaml`, and pass it when creating it:",
        "",
        "```sh",
        f"bakery render --stage instance --hostname web1 --target {target.name} -o web1.user-data",
        "```",
        "",
        *_start_example(target),
        "The instance stage installs no packages and fetches no code, so the app needs no network",
        "on that boot. Rendering the same server again gives the same output; another `--hostname`",
        "gives another server with its own secrets.",
        "",
        "`user-data` and the instance user-data files are private (mode 0600): do not commit them.",
    ]
