"""The command line: thin wrappers over the pipeline. Artifacts go to stdout
or -o; every message goes to stderr. Config and usage errors exit 2, runtime
failures 1, never with a traceback."""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from .errors import BakeryError, ConfigError, UsageError
from .stages import STAGES

CONFIG_HELP = "Config file (default: ./bakery.yaml)."


def parse_memory(value):
    """'2G', '512M' or a number of MiB -> MiB."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([MmGg])?i?[Bb]?\s*", str(value))
    if not match:
        raise UsageError(f"--memory: expected a size such as 512M or 2G, got {value!r}")
    number, unit = int(match.group(1)), (match.group(2) or "M").upper()
    mib = number * 1024 if unit == "G" else number
    if mib < 256:
        raise UsageError(f"--memory: {mib} MiB is too small for a server (at least 256M)")
    return mib


def _common(func):
    func = click.option("-c", "--config", "config", default="bakery.yaml", show_default=True, type=click.Path(dir_okay=False, path_type=Path), help=CONFIG_HELP)(func)
    func = click.option("--target", "-t", "target", default="generic", show_default=True, help="Where the server runs; see `bakery targets`.")(func)
    func = click.option("--memory", "memory", default=None, help="Memory of the machine (e.g. 2G) when it differs from the target's default.")(func)
    func = click.option("--secrets", "secrets", default=None, type=click.Path(dir_okay=False, path_type=Path), help="Secrets file (default: <config>.secrets.yaml beside the config).")(func)
    return func


def _stages(func):
    func = click.option("--stage", "stage", type=click.Choice(STAGES), default="full", show_default=True,
                        help="full: one server from a plain image. image: the part baked into an image, the same for "
                             "every server (what `bakery packer` uses). instance: the small per-server part to pass "
                             "when starting a server from that image.")(func)
    func = click.option("--hostname", "hostname", default=None, metavar="NAME",
                        help="This server's host name, instead of host.hostname; it also keeps the server's secrets "
                             "apart from other servers'. One per server with --stage instance.")(func)
    return func


def _render(config, target, memory, secrets, stage="full", hostname=None, save_secrets=True):
    from .pipeline import render_config
    from .stages import check_stage_options
    from .targets import get_target

    check_stage_options(stage, hostname)
    rendered = render_config(config, get_target(target), memory_mib=parse_memory(memory), secrets_path=secrets,
                             stage=stage, hostname=hostname, save_secrets=save_secrets)
    for note in rendered.plan.notes:
        _say(note)
    return rendered


def _say(message: str) -> None:
    if message:
        click.echo(f"bakery: {message}", err=True)


@contextmanager
def _progress_bar(label: str, total: int):
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bakery-firstboot", prog_name="bakery")
def cli():
    """Turn bakery.yaml into everything a new server needs to configure itself
    on first boot: cloud-init user-data, NoCloud seeds, Packer templates and
    Raspberry Pi SD images."""


@cli.command()
@_common
@_stages
@click.option("--format", "fmt", type=click.Choice(["yaml", "mime", "gzip-base64"]), default="yaml", show_default=True, help="yaml: #cloud-config text; mime: multipart; gzip-base64: compressed, for APIs and forms that take it.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here (atomically, mode 0600) instead of stdout.")
def render(config, target, memory, secrets, stage, hostname, fmt, output):
    """Render cloud-init user-data for TARGET: a whole server (the default),
    or the image and instance stages of servers started from a baked image."""
    from .fsutil import write_output
    from .outputs.userdata import user_data

    rendered = _render(config, target, memory, secrets, stage, hostname)
    _say(write_output(output, user_data(rendered, fmt), never_over=config))


@cli.command()
@_common
@_stages
def validate(config, target, memory, secrets, stage, hostname):
    """Check the config, the target's limits, and (when cloud-init is installed
    here) cloud-init's own schema for the rendered output."""
    from .outputs.userdata import cloud_init_schema, user_data

    # A check has no side effects: the secrets it draws are not saved.
    rendered = _render(config, target, memory, secrets, stage, hostname, save_secrets=False)
    data = user_data(rendered)
    limit = rendered.plan.target.userdata_limit
    stage_note = "" if stage == "full" else f", {stage} stage"
    click.echo(f"{config}: config valid for target {target} ({len(data)} bytes of user-data{stage_note}, limit {limit})", err=True)
    verdict = cloud_init_schema(data)
    click.echo(f"cloud-init schema: {verdict or 'not checked (cloud-init is not installed on this machine)'}", err=True)


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("bakery.yaml"),
              show_default=True, help="The config to write.")
@click.option("--from-app", "app_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="A checkout of your app: fill in what can be told from it (Flask or Django).")
@click.option("--force", is_flag=True, help="Write over an existing file.")
def init(output, app_dir, force):
    """Write a commented bakery.yaml to start from."""
    from .fsutil import atomic_write
    from .starter import detect, starter_yaml

    if output.exists() and not force:
        raise BakeryError(f"{output} exists; bakery init never writes over a config: pass --force, or -o ANOTHER.yaml")
    facts = detect(app_dir.resolve()) if app_dir else None
    atomic_write(output, starter_yaml(facts), mode=0o644)
    _say(f"wrote {output}; next: bakery validate -c {output}")
    for question in facts.questions if facts else []:
        _say(f"question: {question}")


@cli.command()
def targets():
    """List the targets and their defaults."""
    from .defaults import fill
    from .targets import TARGETS

    rows = [("TARGET", "DISTRO", "ADMIN", "USER-DATA LIMIT", "MEMORY", "GZIP", "PACKER")]
    for t in TARGETS.values():
        admin = fill({}, t)["admin"]["name"]
        rows.append((t.name, t.distro, admin, f"{t.userdata_limit} B", f"{t.memory_mib} MiB", "yes" if t.gzip else "no",
                     t.packer or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@cli.command()
@_common
@_stages
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The ISO to write (mode 0600).")
def seed(config, target, memory, secrets, stage, hostname, output):
    """Write a NoCloud seed ISO (volume cidata) for QEMU, VirtualBox, Proxmox;
    with --stage instance, for a VM started from a baked qcow2 image."""
    from .outputs.nocloud import write_seed

    rendered = _render(config, target, memory, secrets, stage, hostname)
    _say(write_seed(rendered, output, never_over=config))


@cli.command()
@_common
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the Packer files.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="A non-secret template variable (region, size, ...); repeatable.")
def packer(config, target, memory, secrets, out_dir, variables):
    """Write a ready-to-build Packer folder that bakes the server into an image:
    the image stage, the same for every server. Each server started from the
    image then gets its own `bakery render --stage instance --hostname NAME`."""
    from .outputs import packer as packer_output

    rendered = _render(config, target, memory, secrets, stage="image")
    _say(packer_output.write(rendered, out_dir, variables))


@cli.command("sd-image")
@click.option("-c", "--config", "config", default="bakery.yaml", show_default=True, type=click.Path(dir_okay=False, path_type=Path), help=CONFIG_HELP)
@click.option("--target", "-t", "target", default="raspberry-pi", show_default=True, help="Normally raspberry-pi.")
@click.option("--memory", "memory", default=None, help="Memory of the board (e.g. 4G); default 1G.")
@click.option("--secrets", "secrets", default=None, type=click.Path(dir_okay=False, path_type=Path), help="Secrets file.")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Raspberry Pi OS / Ubuntu image (.img or .img.xz).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the baked copy here.")
@click.option("--in-place", is_flag=True, help="Bake --image itself instead of a copy.")
@click.option("--boot-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="The boot partition of a card already flashed and mounted.")
def sd_image(config, target, memory, secrets, image, output, in_place, boot_dir):
    """Write the first-boot files onto a Raspberry Pi image's boot partition,
    without root, loop devices or mounts."""
    from .outputs import sdimage

    if boot_dir is not None and (image is not None or output is not None or in_place):
        raise UsageError("--boot-dir stands alone: do not combine it with --image, -o or --in-place")
    if boot_dir is None and image is None:
        raise UsageError("give --image IMG with -o OUT or --in-place, or --boot-dir DIR")
    if image is not None and not in_place and output is None:
        raise UsageError("give -o OUT for a baked copy, or --in-place to change the image itself")
    if in_place and output is not None:
        raise UsageError("--in-place and -o exclude each other")
    rendered = _render(config, target, memory, secrets)
    report = sdimage.bake(rendered, image=image, output=output, in_place=in_place, boot_dir=boot_dir,
                          progress=_progress_bar if sys.stderr.isatty() else None)
    _say(report.summary())


@cli.command()
@_common
@click.option("--from", "server", metavar="[USER@]HOST", default=None,
              help="Read the DKIM public key the server made at its first boot, over SSH (read-only; USER defaults "
                   "to admin.name).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=None, help="SSH port of --from.")
@click.option("-i", "--identity", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="SSH private key for --from.")
def dns(config, target, memory, secrets, server, port, identity):
    """Print the DNS records to add at your DNS provider so that the server's
    mail is accepted: SPF, DKIM (with --from: the key the server signs with)
    and DMARC."""
    from .dns import dns_records, format_records, server_dkim_key
    from .remote import Destination

    if server is None and (port or identity):
        raise UsageError("-p/--port and -i/--identity go with --from [USER@]HOST")
    rendered = _render(config, target, memory, secrets, save_secrets=False)
    mail = rendered.plan.mail
    if not mail.enabled:
        _say("mail is off (mail.enabled: false): no DNS records needed")
        return
    if "." not in mail.domain:
        _say(f"warning: mail domain '{mail.domain}' is not a DNS domain; set host.domain or mail.domain")
    key = None
    if server is not None:
        destination = Destination.parse(server, rendered.plan.admin.name, port, identity)
        key = server_dkim_key(destination, say=_say)
        if key.domain and key.domain != mail.domain:
            _say(f"warning: the server signs for {key.domain}, not for {mail.domain} (the mail domain of {config})")
        if mail.dkim_public_key and "".join(mail.dkim_public_key.split()) != key.public_key:
            _say("note: the server's DKIM key differs from mail.dkim_public_key in the config: publish the record "
                 "below, then drop (or update) mail.dkim_public_key")
    elif not mail.dkim_public_key and mail.dkim:
        _say("no DKIM record: the server makes its key at its first boot; print its record with "
             "bakery dns --from ADMIN@SERVER")
    click.echo(format_records(dns_records(rendered.plan, key)), nl=False)


@cli.command()
@click.argument("destination", metavar="[USER@]HOST")
@click.option("--after-update", is_flag=True, help="Watch the last run of the app's update command instead of first boot.")
@click.option("--app", default=None, metavar="NAME", help="The app's name, for --after-update (default: the config's).")
@click.option("-c", "--config", "config", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Config file (default: ./bakery.yaml when there is one): the admin's name when USER is not "
                   "given, and the app's name.")
@click.option("--target", "-t", "target", default="generic", show_default=True, help="The target the config is for.")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=None, help="SSH port.")
@click.option("-i", "--identity", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="SSH private key to log in with.")
@click.option("--timeout", default="30m", show_default=True, help="Give up waiting after this long (90s, 15m, 1h).")
@click.option("--interval", default="2s", show_default=True, help="Time between two reads of the state.")
@click.option("-v", "--verbose", is_flag=True, help="Stream the current step's log lines.")
def status(destination, after_update, app, config, target, port, identity, timeout, interval, verbose):
    """Watch first boot on a server (or, with --after-update, its update
    command) over SSH, read-only, until it is ready (exit 0), has failed
    (exit 1) or --timeout passes (exit 3). The verdict line goes to stdout."""
    from . import status as watching
    from .status_view import Display

    tty = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    show = Display(sys.stderr, tty=tty, colour=not os.environ.get("NO_COLOR"))
    verdict = watching.run(destination, show=show, port=port, identity=identity, config=config, target=target,
                           after_update=after_update, app=app, verbose=verbose,
                           timeout=watching.parse_duration(timeout, "--timeout"),
                           interval=watching.parse_duration(interval, "--interval"))
    click.echo(verdict.line)
    sys.exit(verdict.exit_code)


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="bakery", standalone_mode=False)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        n = len(exc.problems)
        click.echo(f"bakery: {n} problem{'s' if n != 1 else ''} in the config", err=True)
        sys.exit(2)
    except BakeryError as exc:
        click.echo(f"bakery: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("bakery: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as exc:
        # A file that cannot be read or written: one line, no traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"bakery: error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
