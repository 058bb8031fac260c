"""Machine-wide settings: host name, time zone, swap, trusted CAs (one
file per certificate, trusted by the first-boot script), apt and pip
mirrors/proxies, and the final message.
The host name is per server; the rest is the same on every server and is
baked into images (the apt proxy is named in both stages)."""

from __future__ import annotations

PIP_CONF = "/etc/pip.conf"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Where update-ca-certificates looks for local CAs; the first-boot script
# trusts them (trust_cas in first-boot.sh.j2), and the tool's next run keeps them.
LOCAL_CA_DIR = "/usr/local/share/ca-certificates"
LOCAL_CA_PREFIX = "bakery-ca-"


def build(plan) -> dict:
    out: dict = {}
    if plan.per_server:
        out.update(host_name(plan))
    if plan.shared:
        out.update(machine(plan))
        # Baked once: cloud-init 24 and later write the swap line without the
        # mark they recognise their own lines by, so an instance naming it
        # again got a second line (systemd's fstab generator then fails on
        # every boot) and a reload of systemd in the middle of its boot. An
        # instance naming no mounts leaves the image's line alone.
        if plan.swap_size:
            out["swap"] = {"filename": "/swapfile", "size": plan.swap_size, "maxsize": plan.swap_size}
    # The apt proxy is named in every stage: on each new instance cloud-init
    # rewrites its proxy file, and would remove the image's unless the
    # instance's config names it too.
    if plan.apt_proxy:
        out.setdefault("apt", {})["proxy"] = plan.apt_proxy
    # cloud-init prints this on every boot, whatever bakery's steps did: it
    # must not say "ready". bakery's last step prints the verdict above it.
    out["final_message"] = ("cloud-init $VERSION finished after $UPTIME seconds; "
                            "bakery's verdict is the line before, and in /var/lib/cloud/instance/bakery/status.")
    return out


def host_name(plan) -> dict:
    out: dict = {}
    if plan.hostname:
        out["hostname"] = plan.hostname
        if plan.fqdn:
            out["fqdn"] = plan.fqdn
        out["prefer_fqdn_over_hostname"] = False
    # Without this every sudo prints "unable to resolve host" after a rename.
    out["manage_etc_hosts"] = True
    return out


def machine(plan) -> dict:
    out: dict = {}
    if plan.timezone:
        out["timezone"] = plan.timezone
    files = [{"path": f"{LOCAL_CA_DIR}/{LOCAL_CA_PREFIX}{n}.crt", "owner": "root:root", "permissions": "0644",
              "content": pem} for n, pem in enumerate(plan.ca_certs, 1)]
    pip_lines = []
    if plan.pip_index_url:
        pip_lines.append(f"index-url = {plan.pip_index_url}")
    if plan.ca_certs:
        # pip inside a venv may carry its own CA bundle; point it at the system
        # store, which now includes the extra CAs.
        pip_lines.append(f"cert = {SYSTEM_CA_BUNDLE}")
    if pip_lines:
        files.append({"path": PIP_CONF, "owner": "root:root", "permissions": "0644",
                      "content": "[global]\n" + "\n".join(pip_lines) + "\n"})
    if files:
        out["write_files"] = files
    return out
