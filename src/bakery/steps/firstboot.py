"""bakery's first boot (MISSION steps 4-6, 8, 13-19 where cloud-init has no
module): the steps, the script that runs them, and how cloud-init is made
to run them until they have all succeeded.

cloud-init runs each module once per instance and marks it done before it
runs it, so a power cut or a failed step would never be carried on. bakery
owns completion instead:
- the script is one program run once per step, through links named
  ``bakery-NN-STEP`` in cloud-init's per-instance scripts folder, so
  ``cloud-init status --long`` names a step that failed;
- a bootcmd, which cloud-init runs on every boot, makes the links and, until
  the last step has recorded that first boot is done, re-arms cloud-init:
  the steps run again, or, when a boot was cut before they started, the
  delivery of their files too;
- the steps that lock the machine down come first and run even after an
  earlier one failed; the final line says "ready" only when all succeeded;
- the bootcmd also starts the steps early, from a unit of their own
  (EARLY_UNIT), instead of in cloud-final, which waits for every service the
  image starts at boot; each step records how it ended for that boot
  (RAN_DIR), and the links report that instead of running it again.
"""

from __future__ import annotations

from ..templating import render
from . import mail, packages, system
from ..layout import LIB_DIR, STATE_DIR, UNPACKED_MARK, paths
from .hardening import PASSWORD_HASH_ROUNDS, SYSCTL_FILE
from .web import certificate_name

SCRIPT = f"{LIB_DIR}/first-boot.sh"
RUNPARTS_DIR = "/var/lib/cloud/scripts/per-instance"
# The steps that close the machine; each later step opens something.
LOCKDOWN = ("ssh", "packages", "firewall", "harden", "services")
# The steps run early, from this unit, which the bootcmd starts: not in
# cloud-final, which waits for every service the image starts at boot
# (multi-user.target); cloud-final's links report them. A whole server's
# wait for cloud-init's config stage (apt sources, passwords, time zone); a
# server from a baked image needs only the network stage, which writes the
# script and which a unit's default ordering (after sysinit.target) follows.
EARLY_UNIT = "bakery-first-boot"
EARLY_AFTER = "cloud-config.service"
# What each step run --once ended with, this boot only (a tmpfs).
RAN_DIR = "/run/bakery/ran"
# Until the verdict, the steps and the services the site is served by get the
# CPU before the image's other services (cloud-init's later stages, snapd,
# apport...), which each have a weight of 100: on a small server those held
# the database's start and the app's to a third of a CPU. A runtime setting:
# the verdict sets it back, and a reboot forgets it.
SERVING_CPU_WEIGHT = 1000


def serving_units(plan) -> list:
    """The services a server's site is served by, whose start the steps wait
    for (the steps' own unit aside); names that do not exist are skipped."""
    if not (plan.per_server and plan.app):
        return []
    units = []
    engine = plan.database.engine if plan.database else None
    if engine == "mysql":
        units += ["mysql.service", "mariadb.service"]  # Ubuntu's, Debian's
    elif engine == "postgresql":
        units.append("system-postgresql.slice")  # the clusters' postgresql@VERSION-NAME units
    units.append("supervisor.service")
    if plan.web and plan.web.nginx:
        units.append("nginx.service")
    return units


def step_names(plan) -> list:
    """The first-boot steps of ``plan``, in the order they run."""
    steps = []
    if plan.shared:
        steps += ["ssh", "packages"]
        if plan.firewall:
            steps.append("firewall")
        if plan.hardening:
            steps.append("harden")
    web = plan.web if plan.app else None
    nginx = bool(web and web.nginx)
    # The lockdown of what the packages brought: nginx's default site gone,
    # postfix loopback-only, before anything starts.
    if plan.shared and (plan.mail.enabled or nginx):
        steps.append("services")
    if plan.locale:
        steps.append("locale")
    if plan.app:
        if plan.per_server and plan.database and plan.database.engine in ("mysql", "postgresql"):
            steps.append("database")
        if plan.elasticsearch:
            steps.append("search")
        steps.append("app")
        if plan.per_server and nginx:
            if web.tls != "none":
                steps.append("certificate")
            steps.append("nginx")
    # Mail comes after the site serves: starting postfix takes seconds on a
    # small CPU, and making the signing key longer (mail leaves unsigned
    # without it). postfix starts once, signing included; an image starts it
    # at boot, and each server gives it its name. (Left disabled in the image,
    # enabling it here, with systemd's reload and the SysV scripts, cost more
    # than its start at boot: 20 s on a small VM.)
    if plan.mail.dkim and plan.per_server:
        steps.append("dkim")
    if plan.mail.enabled and plan.per_server:
        steps.append("mail")
    if plan.app and plan.per_server and nginx and web.tls == "letsencrypt":
        steps.append("letsencrypt")
    steps.append("verdict")
    return steps


def _context(plan, where=None) -> dict:
    return dict(plan=plan, paths=where or paths(plan), steps=step_names(plan), lockdown=LOCKDOWN, script=SCRIPT,
                state_dir=STATE_DIR, unpacked_mark=UNPACKED_MARK, runparts_dir=RUNPARTS_DIR, sysctl_file=SYSCTL_FILE, hash_rounds=PASSWORD_HASH_ROUNDS,
                cert_name=certificate_name(plan) if plan.web else None, dkim=mail.server_paths(),
                opendkim_conf=mail.opendkim_conf(plan) if plan.mail.dkim and plan.per_server else None,
                packages=packages.package_list(plan) if plan.shared else [],
                debconf=packages.debconf_selections(plan) if plan.shared else "",
                apt_options=packages.apt_options(plan), list_options=packages.LIST_OPTIONS,
                prefetch_unit=packages.PREFETCH_UNIT, prefetch_dir=packages.PREFETCH_DIR,
                sources_digest=packages.SOURCES_DIGEST, ran_dir=RAN_DIR,
                early_unit=EARLY_UNIT, early_after=None if plan.stage == "instance" else EARLY_AFTER,
                serving_units=serving_units(plan), serving_weight=SERVING_CPU_WEIGHT,
                first_packages=packages.first_packages(plan) if plan.shared else [],
                local_cas=f"{system.LOCAL_CA_DIR}/{system.LOCAL_CA_PREFIX}*.crt")


def first_boot_script(plan, paths=None) -> str:
    """The script; tests pass other ``paths`` to run it inside a temporary root."""
    return render("first-boot.sh.j2", **_context(plan, paths))


def resume_script(plan) -> str:
    return render("first-boot-resume.sh.j2", **_context(plan))


def build(plan) -> dict:
    return {
        "bootcmd": [["sh", "-c", resume_script(plan)]],
        "write_files": [{"path": SCRIPT, "owner": "root:root", "permissions": "0700", "content": first_boot_script(plan)}],
    }
