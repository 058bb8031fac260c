"""What a render covers, and the command line's rules for choosing it.
"full" is one server configured from a plain image. "image" is the part that
is the same on every server (baked with Packer); "instance" is the part that
must differ per server (host name, secrets, certificate), passed when a
server is started from that image.

Kept apart from plan.py so the command line can offer and check the choice
without importing the engine."""

from __future__ import annotations

import re
from typing import Optional

from .errors import UsageError

STAGES = ("full", "image", "instance")
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_stage_options(stage: str, hostname: Optional[str]) -> None:
    """--stage and --hostname together: UsageError when they cannot be."""
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    if hostname is None:
        return
    if not HOSTNAME.fullmatch(hostname):
        raise UsageError(f"--hostname {hostname!r} is not a host name: use letters, digits and hyphens "
                         "(at most 63), not starting or ending with a hyphen, e.g. web1")
    if stage == "image":
        raise UsageError("--hostname names one server, and the image stage is the same for every server: "
                         "use it with --stage instance")
