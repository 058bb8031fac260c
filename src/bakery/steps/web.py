"""nginx in front of gunicorn, with TLS (MISSION steps 18-19): the site file
and, for Let's Encrypt, the script and systemd timer that keep trying until
a certificate is issued. The self-signed certificate is made on the server
by the first-boot script, so its key never travels in user-data.
An image holds the site file unless the site is named after the host; each
server enables it once it has made its own certificate."""

from __future__ import annotations

from ..templating import render
from ..layout import paths


def certificate_name(plan) -> str:
    if plan.web.server_name != "_":
        return plan.web.server_name
    return plan.fqdn or plan.hostname or "localhost"


def nginx_site(plan, log_dir: str | None = None, hsts: str | None = None) -> str:
    """The site; tests pass other ``log_dir`` and ``hsts`` paths to check it with nginx -t."""
    where = paths(plan)
    return render("nginx-site.conf.j2", plan=plan, webroot=where.webroot, log_dir=log_dir or where.nginx_log_dir,
                  hsts=hsts or where.nginx_hsts)


def letsencrypt_files(plan) -> list:
    where = paths(plan)
    unit = where.letsencrypt_unit
    return [
        {"path": where.letsencrypt, "owner": "root:root", "permissions": "0755",
         "content": render("letsencrypt.sh.j2", plan=plan, webroot=where.webroot, unit=unit, hsts=where.nginx_hsts)},
        {"path": f"/etc/systemd/system/{unit}.service", "owner": "root:root", "permissions": "0644",
         "content": render("letsencrypt.service.j2", plan=plan, script=where.letsencrypt)},
        {"path": f"/etc/systemd/system/{unit}.timer", "owner": "root:root", "permissions": "0644",
         "content": render("letsencrypt.timer.j2", plan=plan)},
    ]


def build(plan) -> dict:
    if plan.app is None or plan.web is None or not plan.web.nginx:
        return {}
    if not (plan.per_server if plan.web.name_from_host else plan.shared):
        return {}
    files = [{"path": paths(plan).nginx_site, "owner": "root:root", "permissions": "0644",
              "content": nginx_site(plan)}]
    if plan.web.tls == "letsencrypt":
        files += letsencrypt_files(plan)
    return {"write_files": files}
