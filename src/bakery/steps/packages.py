"""Packages (MISSION step 6): the list, and the answers to the questions they
ask while they install. Installed by the first-boot script's packages step,
not by cloud-init's package module, so that an install cut by a power loss
is finished at the next boot (see steps/firstboot.py); without recommends,
and with their services held back until the steps that set them up.
Names are chosen to resolve on Ubuntu 22.04/24.04 and Debian 12/13 alike:
default-mysql-server is MySQL on Ubuntu and MariaDB on Debian. Installed
when the image is baked, not again on each server started from it.

The venv's own pip comes from python3-venv; neither the system pip nor a C
compiler is installed unless a pip install needs one to build a package
from source (the update command then installs them; see update.sh.j2)."""

from __future__ import annotations

from ..templating import shell_quote
from ..targets import MDNS
from . import hardening, mail

# The packages are fetched early, in the background: on every boot until
# the packages step has succeeded, cloud-init's bootcmd starts this unit; it
# starts once cloud-init's network stage is over (which writes the script)
# and runs the script's --prefetch, which updates the package lists and
# downloads the packages while cloud-init's later stages run. The step waits for it
# and installs from what it fetched; it updates the lists again only when
# the sources changed since (cloud-init rewrites them later in the boot,
# and a provider's mirror may differ from the image's).
PREFETCH_UNIT = "bakery-apt-prefetch"  # a service
PREFETCH_DIR = "/run/bakery"  # gone at the next boot: lists are only trusted on the boot that fetched them
# What the package lists are fetched from: the index files the sources name
# (not their text, which cloud-init writes again with other comments).
SOURCES_DIGEST = "apt-get indextargets --no-release-info --format '$(URI)' | sort | md5sum"
# The venv's and the checkout's needs: installed first, so the app is
# prepared in the background while the rest installs.
APP_FIRST = ["python3", "python3-venv", "git"]


def first_packages(plan) -> list:
    """What the packages step installs before the rest, for the work it
    starts in the background while the rest installs: the app's checkout
    and venv, and the firewall step (ufw)."""
    first = list(APP_FIRST) if plan.app is not None else []
    if plan.firewall:
        first.append("ufw")
    return first


def package_list(plan) -> list:
    # Security updates install themselves (see AUTO_UPGRADES).
    pkgs = ["ca-certificates", "openssl", "unattended-upgrades"]
    if plan.firewall:
        pkgs.append("ufw")
    app = plan.app
    if app is not None:
        pkgs += APP_FIRST + ["supervisor"]
        engine = plan.database.engine if plan.database else "none"
        pkgs += {"mysql": ["default-mysql-server"], "postgresql": ["postgresql"], "sqlite": ["sqlite3"]}.get(engine, [])
        if plan.web and plan.web.nginx:
            pkgs.append("nginx")
            if plan.web.tls == "letsencrypt":
                pkgs += ["certbot"]
    if plan.mail.enabled:
        pkgs.append("postfix")
    if plan.mail.dkim:
        pkgs += mail.PACKAGES
    if plan.target.can(MDNS):
        pkgs.append("avahi-daemon")  # ssh pi@HOST.local
    if plan.locale:
        pkgs.append("locales")
    pkgs += hardening.package_list(plan)
    for extra in plan.extra_packages:
        if extra not in pkgs:
            pkgs.append(extra)
    return list(dict.fromkeys(pkgs))


# apt's periodic jobs: fresh lists and unattended-upgrades every day. The
# package's own configuration takes the security archive only.
AUTO_UPGRADES_FILE = "/etc/apt/apt.conf.d/20auto-upgrades"
AUTO_UPGRADES = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'


def debconf_selections(plan) -> str:
    """debconf-set-selections lines: the answers packages would ask for while
    they install (unattended-upgrades' own postinst writes 20auto-upgrades
    from its answer)."""
    lines = "unattended-upgrades unattended-upgrades/enable_auto_updates boolean true\n"
    if plan.mail.enabled:
        lines += ("postfix postfix/main_mailer_type select Internet Site\n"
                  f"postfix postfix/mailname string {plan.mail.domain}\n")
    return lines


def build(plan) -> dict:
    # cloud-init's own package module stays off: the first-boot script installs.
    out: dict = {"package_update": False}
    if plan.shared:
        out["write_files"] = [{"path": AUTO_UPGRADES_FILE, "owner": "root:root", "permissions": "0644",
                               "content": "// Written by bakery: security updates install themselves.\n" + AUTO_UPGRADES}]
    return out


# How first boot fetches the package lists: without translations, and gzip-
# compressed where the archive offers it (Debian's and Ubuntu's main archives
# do, beside xz; apt falls back to xz where not). gzip unpacks several times
# faster than xz, and on a small server the fetch is bound by the CPU, not
# the network: in an Ubuntu 24.04 tree `apt-get update` took 1.5-1.7 s of
# CPU instead of 2.6-3.1 s, for 35 MB fetched instead of 27.
LIST_OPTIONS = "-o Acquire::Languages=none -o Acquire::CompressionTypes::Order::=gz"


def apt_options(plan) -> str:
    """apt options first boot passes before cloud-init has configured apt."""
    options = "-q " + LIST_OPTIONS
    if plan.apt_proxy:
        options += " -o " + shell_quote(f"Acquire::http::Proxy={plan.apt_proxy}")
    return options

