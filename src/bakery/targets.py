"""Targets are data: one row per place a server can run. Adding a provider is
adding a row here.

User-data size limits, as documented by each provider (bytes of the user-data
as submitted):
- DigitalOcean: 64 KiB, plain text ("User data is limited to 64 KiB",
  docs.digitalocean.com/products/droplets/how-to/provide-user-data/).
- Amazon EC2: 16 KB before base64 encoding (docs.aws.amazon.com, "Run commands
  when you launch an EC2 instance with user data input"); cloud-init on the
  instance accepts gzip-compressed user-data.
- Lightsail: launch scripts go through the same EC2 user-data path; the
  16 KB EC2 limit is assumed (not documented separately).
- Hetzner Cloud: 32 KiB (docs.hetzner.cloud, "user_data ... max 32KiB").
  Compressed user-data works only as base64(gzip), which is what
  `--format gzip-base64` writes: Hetzner's cloud-init datasource decodes
  base64 before cloud-init sees gzip.
- Linode (Akamai) Metadata: 16,384 bytes of decoded user data, the limit
  Linode's own Cluster API provider enforces ("per the Linode API",
  github.com/linode/cluster-api-provider-linode). Compressed user-data is not
  safe there: its datasource decodes the base64 as UTF-8 text, which gzip is
  not.
- vagrant, generic, raspberry-pi: read from a local seed, no provider limit;
  bakery keeps a generous 1 MiB guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import UsageError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    distro: str  # default image family, e.g. "ubuntu-24.04"
    admin_user: str
    userdata_limit: int  # bytes
    memory_mib: int
    cpus: int
    gzip: bool  # provider passes compressed user-data through to cloud-init
    nginx: bool = True
    database: str = "mysql"
    workers: Optional[int] = None  # fixed gunicorn worker count, else sized
    raspberry_pi: bool = False


_MIB = 1024 * 1024

TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("digitalocean", "DigitalOcean Droplet", "ubuntu-24.04", "ubuntu", 64 * 1024, 1024, 1, gzip=False),
    Target("linode", "Linode (Akamai) instance", "ubuntu-24.04", "ubuntu", 16_384, 1024, 1, gzip=False),
    Target("lightsail", "Amazon Lightsail instance", "ubuntu-24.04", "ubuntu", 16_384, 512, 1, gzip=True),
    Target("ec2", "Amazon EC2 instance", "ubuntu-24.04", "ubuntu", 16_384, 1024, 2, gzip=True),
    Target("hetzner", "Hetzner Cloud server", "ubuntu-24.04", "ubuntu", 32 * 1024, 2048, 1, gzip=True),
    Target("vagrant", "local Vagrant VM (1 GiB, 192.168.33.10)", "ubuntu-24.04", "ubuntu", _MIB, 1024, 1, gzip=True),
    Target("generic", "any cloud-init machine (NoCloud seed, QEMU, Proxmox)", "debian-12", "ubuntu", _MIB, 1024, 1, gzip=True),
    Target("raspberry-pi", "Raspberry Pi (Raspberry Pi OS or Ubuntu with cloud-init)", "raspios-trixie", "pi", _MIB, 1024, 4,
           gzip=False, nginx=False, database="sqlite", workers=1, raspberry_pi=True),
]}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, TARGETS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown target '{name}'{hint} Known targets: {', '.join(TARGETS)}")
