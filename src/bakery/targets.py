"""Targets are data: one row per place a server can run. Adding a provider is
adding a row here: its limits, what its images can do (capabilities), the
config defaults that differ there, and the Packer builder that bakes it (or
why there is none).

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

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .errors import UsageError

# What a target's images and provider can do. Steps ask for a capability,
# never for a target by name.
GZIP_USERDATA = "gzip-userdata"  # the provider passes compressed user-data through to cloud-init
SSH_OFF_BY_DEFAULT = "ssh-off-by-default"  # the image ships sshd disabled (Raspberry Pi OS)
MDNS = "mdns"  # reachable as HOST.local on the local network (avahi)
HARDWARE_GROUPS = "hardware-groups"  # GPIO, I2C, SPI, camera: the admin joins their groups
SD_IMAGE = "sd-image"  # installed by writing an SD card image (`bakery sd-image`)

_MIB = 1024 * 1024


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    distro: str  # default image family, e.g. "ubuntu-24.04"
    userdata_limit: int  # bytes
    memory_mib: int
    cpus: int
    capabilities: frozenset = frozenset()
    # Config defaults that differ on this target, by dotted key; the schema
    # holds every other default.
    defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)
    packer: Optional[str] = None  # the Packer builder that bakes it
    no_packer: str = ""  # why there is no Packer builder

    @property
    def gzip(self) -> bool:
        return GZIP_USERDATA in self.capabilities

    def can(self, capability: str) -> bool:
        return capability in self.capabilities


_GZ = frozenset({GZIP_USERDATA})

TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("digitalocean", "DigitalOcean Droplet", "ubuntu-24.04", 64 * 1024, 1024, 1, packer="digitalocean"),
    Target("linode", "Linode (Akamai) instance", "ubuntu-24.04", 16_384, 1024, 1,
           no_packer="Packer has no built-in Linode builder (Debian's Packer 1.6.6 cannot build for Linode). "
                     "Render the user-data with `bakery render --target linode` and pass it as Linode metadata, "
                     "or write a template for the `linode` plugin (github.com/linode/linode, Packer 1.7 or later)."),
    Target("lightsail", "Amazon Lightsail instance", "ubuntu-24.04", 16_384, 512, 1, _GZ, packer="amazon-ebs"),
    Target("ec2", "Amazon EC2 instance", "ubuntu-24.04", 16_384, 1024, 2, _GZ, packer="amazon-ebs"),
    Target("hetzner", "Hetzner Cloud server", "ubuntu-24.04", 32 * 1024, 2048, 1, _GZ, packer="hcloud"),
    Target("vagrant", "local Vagrant VM (1 GiB, 192.168.33.10)", "ubuntu-24.04", _MIB, 1024, 1, _GZ, packer="qemu"),
    Target("generic", "any cloud-init machine (NoCloud seed, QEMU, Proxmox)", "debian-12", _MIB, 1024, 1, _GZ,
           packer="qemu"),
    Target("raspberry-pi", "Raspberry Pi (Raspberry Pi OS or Ubuntu with cloud-init)", "raspios-trixie", _MIB, 1024, 4,
           frozenset({SSH_OFF_BY_DEFAULT, MDNS, HARDWARE_GROUPS, SD_IMAGE}),
           # A small board: gunicorn alone on port 8000 with SQLite, one worker.
           defaults={"admin.name": "pi", "web.nginx": False, "database.engine": "sqlite", "app.workers": 1},
           no_packer="a Raspberry Pi is not baked with Packer: write an SD card image with `bakery sd-image` instead."),
]}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, TARGETS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown target '{name}'{hint} Known targets: {', '.join(TARGETS)}")
