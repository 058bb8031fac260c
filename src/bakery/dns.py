"""The DNS records a user must add at their DNS provider so that the
server's outgoing mail is accepted (MISSION step 8): SPF for the mail
domain and, when a DKIM key is configured, its DKIM record. bakery cannot
add them itself: it prints them, `bakery dns`, in zone-file form."""

from __future__ import annotations

TXT_CHUNK = 255  # a DNS character-string holds at most 255 bytes


def dns_records(plan) -> list[tuple[str, str, str]]:
    """(name, type, value) for the mail domain; empty when mail is off."""
    mail = plan.mail
    if not mail.enabled:
        return []
    mechanisms = ["a", "mx"]
    if plan.fqdn and plan.fqdn != mail.domain:
        # Mail leaves from the server's own name, which the domain's A record may not cover.
        mechanisms.append(f"a:{plan.fqdn}")
    records = [(mail.domain, "TXT", "v=spf1 " + " ".join(mechanisms) + " -all")]
    if mail.dkim_selector and mail.dkim_public_key:
        key = "".join(mail.dkim_public_key.split())
        records.append((f"{mail.dkim_selector}._domainkey.{mail.domain}", "TXT", f"v=DKIM1; k=rsa; p={key}"))
    return records


def _txt(value: str) -> str:
    parts = [value[i:i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)


def format_records(records) -> str:
    """Zone-file lines, one per record (TXT values quoted and split)."""
    if not records:
        return ""
    width = max(len(name) for name, _, _ in records) + 1
    lines = []
    for name, rtype, value in records:
        shown = _txt(value) if rtype == "TXT" else value
        lines.append(f"{(name + '.').ljust(width)}  3600  IN  {rtype}  {shown}")
    return "\n".join(lines) + "\n"
