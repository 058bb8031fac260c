"""Packages (MISSION step 6), installed non-interactively by cloud-init.
Names are chosen to resolve on Ubuntu 22.04/24.04 and Debian 12/13 alike:
default-mysql-server is MySQL on Ubuntu and MariaDB on Debian. Installed
when the image is baked, not again on each server started from it."""

from __future__ import annotations


def package_list(plan) -> list:
    pkgs = ["ca-certificates", "openssl"]
    if plan.firewall:
        pkgs.append("ufw")
    app = plan.app
    if app is not None:
        pkgs += ["python3", "python3-venv", "python3-dev", "python3-pip", "git", "supervisor"]
        engine = plan.database.engine if plan.database else "none"
        pkgs += {"mysql": ["default-mysql-server"], "postgresql": ["postgresql"], "sqlite": ["sqlite3"]}.get(engine, [])
        if plan.web and plan.web.nginx:
            pkgs.append("nginx")
            if plan.web.tls == "letsencrypt":
                pkgs += ["certbot"]
    if plan.mail.enabled:
        pkgs.append("postfix")
    if plan.target.raspberry_pi:
        pkgs.append("avahi-daemon")  # ssh pi@HOST.local
    if plan.locale:
        pkgs.append("locales")
    for extra in plan.extra_packages:
        if extra not in pkgs:
            pkgs.append(extra)
    return list(dict.fromkeys(pkgs))


def build(plan) -> dict:
    if not plan.shared:
        # A server started from the image finds its packages installed; no
        # apt run keeps its first boot short and independent of the mirrors.
        return {"package_update": False}
    out = {"package_update": True, "packages": package_list(plan)}
    if plan.mail.enabled:
        # postfix asks two questions during install; answer them up front.
        out["apt"] = {"debconf_selections": {
            "postfix": "postfix postfix/main_mailer_type select Internet Site\n"
                       f"postfix postfix/mailname string {plan.mail.domain}\n"}}
    return out
