"""The DNS records a user must add at their DNS provider so that the
server's outgoing mail is accepted (MISSION step 8): SPF for the mail
domain, the DKIM record of the key the server signs with, and DMARC.
bakery cannot add them itself: it prints them, `bakery dns`, in zone-file
form.

The DKIM key is made on the server at its first boot and its private half
never leaves it: `bakery dns --from [USER@]HOST` reads the public half over
SSH (read-only, as the admin); without --from the record is printed only
for a key the config names (mail.dkim_public_key)."""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

from . import layout, remote
from .errors import BakeryError

TXT_CHUNK = 255  # a DNS character-string holds at most 255 bytes
DMARC_NEXT = ("p=none only asks receivers for reports. Once the reports show your mail passing SPF and DKIM "
              "(a few weeks), change it to p=quarantine")


class Record(NamedTuple):
    name: str
    rtype: str
    value: str
    comment: str = ""  # printed as a zone-file comment after the record


class DkimKey(NamedTuple):
    selector: str
    domain: Optional[str]  # the domain the key was made for, when known
    public_key: str  # the base64 p= value


def dns_records(plan, dkim: Optional[DkimKey] = None) -> list:
    """The records for the mail domain (empty when mail is off): SPF, DKIM
    for ``dkim`` (else for the config's key, if any), DMARC."""
    mail = plan.mail
    if not mail.enabled:
        return []
    mechanisms = ["a", "mx"]
    if plan.fqdn and plan.fqdn != mail.domain:
        # Mail leaves from the server's own name, which the domain's A record may not cover.
        mechanisms.append(f"a:{plan.fqdn}")
    records = [Record(mail.domain, "TXT", "v=spf1 " + " ".join(mechanisms) + " -all")]
    if dkim is None and mail.dkim_public_key:
        dkim = DkimKey(mail.dkim_selector, mail.domain, "".join(mail.dkim_public_key.split()))
    if dkim is not None:
        records.append(Record(f"{dkim.selector}._domainkey.{dkim.domain or mail.domain}", "TXT",
                              f"v=DKIM1; k=rsa; p={dkim.public_key}"))
    records.append(Record(f"_dmarc.{mail.domain}", "TXT", f"v=DMARC1; p=none; rua=mailto:{mail.dmarc_reports}",
                          DMARC_NEXT))
    return records


def _txt(value: str) -> str:
    parts = [value[i:i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)


def format_records(records) -> str:
    """Zone-file lines, one per record (TXT values quoted and split), each
    comment on a line of its own after its record."""
    if not records:
        return ""
    width = max(len(record.name) for record in records) + 1
    lines = []
    for record in records:
        shown = _txt(record.value) if record.rtype == "TXT" else record.value
        lines.append(f"{(record.name + '.').ljust(width)}  3600  IN  {record.rtype}  {shown}")
        if record.comment:
            lines.append(f"; {record.comment}")
    return "\n".join(lines) + "\n"


_GENKEY_RECORD = re.compile(r"^\s*([A-Za-z0-9_-]+)\._domainkey\s+IN\s+TXT\s+\((?P<strings>[^)]*)\)"
                            r"(?:\s*;\s*-+\s*DKIM key \S+ for (?P<domain>\S+))?", re.S)


def parse_genkey_record(text: str) -> DkimKey:
    """The key in the TXT record opendkim-genkey writes (SELECTOR.txt):
    ``SEL._domainkey IN TXT ( "v=DKIM1; ..." "p=..." ) ; ----- DKIM key SEL for DOMAIN``."""
    match = _GENKEY_RECORD.match(text)
    if not match:
        raise ValueError("not the TXT record opendkim-genkey writes")
    value = "".join(re.findall(r'"([^"]*)"', match.group("strings")))
    tags = dict(tag.strip().partition("=")[::2] for tag in value.split(";") if "=" in tag)
    key = "".join(tags.get("p", "").split())
    if not re.fullmatch(r"[A-Za-z0-9+/]+=*", key):
        raise ValueError("its p= tag holds no public key")
    return DkimKey(match.group(1), match.group("domain"), key)


def server_dkim_key(destination: remote.Destination, say=lambda message: None) -> DkimKey:
    """The public DKIM key of the server at ``destination``, read over SSH
    with ``sudo -n cat`` (the admin's passwordless sudo; nothing is changed).
    A host key pinned now is told through ``say``."""
    command = f"sudo -n cat {layout.DKIM_PUBLIC_RECORD}"
    with remote.Connection(destination, remote.known_hosts_file()) as connection:
        answer = connection.run(command, "")
        fingerprint = connection.pinned_now() if answer.code != 255 else None
        if fingerprint:
            say(f"pinned the host key of {destination.host} ({fingerprint}) in {connection.known_hosts}: only this "
                "key is accepted for it from now on; compare it with the fingerprints on the server's console")
    if answer.code == 255:
        raise BakeryError(f"ssh to {destination} failed: {answer.reason}")
    if not answer.ok:
        if "No such file" in answer.stderr:
            raise BakeryError(
                f"{destination.host} has no DKIM key ({layout.DKIM_PUBLIC_RECORD} is missing): its first boot may "
                "still be running (cloud-init status), or it was made from a config without mail or without a mail "
                "domain")
        raise BakeryError(f"{command!r} failed on {destination}: {answer.reason}")
    try:
        return parse_genkey_record(answer.stdout)
    except ValueError as exc:
        raise BakeryError(f"{layout.DKIM_PUBLIC_RECORD} on {destination.host}: {exc}") from None
