"""DKIM signing of the server's outgoing mail (MISSION step 8): opendkim's
configuration (its key and signing tables inline), and the paths the
first-boot dkim step uses to make the key and wire postfix to opendkim.

The key itself is never in user-data: the dkim step makes it on the
server at first boot (opendkim-genkey, 2048-bit RSA), once; `bakery dns
--from` reads its public half over SSH. opendkim.conf is per server (the host
name may be signed for too) and written by that step, from inside the
first-boot script (sent compressed: a 16 KiB target has little room), so an
image carries neither it nor a key (the Packer clean-up removes one). postfix
(started by the mail step that follows) hands every mail to opendkim as a milter over a
socket inside its chroot, and sends the mail unsigned rather than not at
all when opendkim is down.

The mail is signed with d= the mail domain when its From: address is in
the mail domain or one of its subdomains, or is the server's own name."""

from __future__ import annotations

import re
from types import SimpleNamespace

from .. import layout
from ..templating import UnsafeValue, render

KEY_NAME = "bakery"  # the key's name in opendkim's key table
# The packages: the signer, and opendkim-genkey.
PACKAGES = ["opendkim", "opendkim-tools"]
# What postfix passes every mail through, relative to its queue folder (so
# the same name works inside and outside its chroot).
MILTER = f"unix:{layout.OPENDKIM_SOCKET}"
# The package's systemd unit waits for this file (Type=forking, PIDFile=).
PID_FILE = "/run/opendkim/opendkim.pid"
# The schema admits only these in domains, host names and selectors; the
# inline tables split at ",", "=" and ":".
_TOKEN = re.compile(r"[A-Za-z0-9._-]+")


def _token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise UnsafeValue(f"not a DNS name or selector opendkim's tables can hold: {value!r}")
    return value


def signing_domains(plan) -> list:
    """The From: domains whose mail is signed: the mail domain, its
    subdomains (".domain" in opendkim's tables), and the server's
    own name when it lies outside the mail domain."""
    domain = _token(plan.mail.domain)
    domains = [domain, f".{domain}"]
    if plan.fqdn and plan.fqdn != domain and not plan.fqdn.endswith(f".{domain}"):
        domains.append(_token(plan.fqdn))
    return domains


def key_table(plan, private_key: str = layout.DKIM_PRIVATE_KEY) -> str:
    """opendkim's key table, inline (a "csl:" data set): the key's name,
    then the d= domain, the selector and the private key's file."""
    mail = plan.mail
    return f"csl:{KEY_NAME}={_token(mail.domain)}:{_token(mail.dkim_selector)}:{private_key}"


def signing_table(plan) -> str:
    """opendkim's signing table, inline: each From: domain signed, with the key's name."""
    return "csl:" + ",".join(f"{domain}={KEY_NAME}" for domain in signing_domains(plan))


def opendkim_conf(plan, where=None) -> str:
    """opendkim.conf; tests pass other ``where`` (server_paths) to run it here."""
    where = where or server_paths()
    return render("opendkim.conf.j2", where=where, key_table=key_table(plan, where.private_key),
                  signing_table=signing_table(plan))


def server_paths() -> SimpleNamespace:
    """Where opendkim's files, key and socket are on the server."""
    return SimpleNamespace(key_dir=layout.DKIM_KEY_DIR, private_key=layout.DKIM_PRIVATE_KEY,
                           public_record=layout.DKIM_PUBLIC_RECORD, conf=layout.OPENDKIM_CONF,
                           socket_dir=f"{layout.POSTFIX_QUEUE_DIR}/{layout.OPENDKIM_SOCKET_DIR}",
                           socket=f"{layout.POSTFIX_QUEUE_DIR}/{layout.OPENDKIM_SOCKET}",
                           milter=MILTER, pid_file=PID_FILE)
