"""What the mail tests share: the records `bakery dns` prints, read back as a
DNS zone, and dkimpy's verifier asking that zone for the DKIM key (a local
DNS stand-in: the message is checked against exactly the record the user
would publish)."""

from __future__ import annotations

import re


def zone_txt(zone: str) -> dict:
    """{name with its final dot: TXT value} of `bakery dns`'s output, the
    value's character-strings joined as a resolver joins them."""
    records = {}
    for line in zone.splitlines():
        match = re.match(r"(\S+)\s+\d+\s+IN\s+TXT\s+(.*)$", line)
        if match:
            strings = re.findall(r'"((?:[^"\\]|\\.)*)"', match.group(2))
            records[match.group(1)] = "".join(strings).encode()
    return records


def dkim_verifies(message: bytes, zone: str) -> bool:
    """dkimpy's verdict on the message's DKIM-Signature, with the DKIM key
    taken from ``zone`` instead of the DNS."""
    import dkim

    records = zone_txt(zone)
    asked = []

    def dnsfunc(name: bytes, timeout: float = 5):
        asked.append(name.decode())
        return records.get(name.decode())

    verdict = dkim.verify(message, dnsfunc=dnsfunc)
    assert asked, "dkimpy asked for no key: the message carries no DKIM-Signature"
    return verdict
