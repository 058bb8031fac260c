"""Assembling the step fragments into one cloud-config (plain data) and
emitting it as text: #cloud-config YAML, MIME multipart, or gzip+base64.
YAML is only ever produced by yaml.safe_dump, never by templating."""

from __future__ import annotations

import base64
import functools
import re
import gzip
import hashlib
import io
import lzma

import yaml

from .errors import BakeryError, UsageError
from .layout import LIB_DIR, UNPACKED_MARK

FORMATS = ("yaml", "mime", "gzip-base64")

# Keys in the order a reader expects them; anything else follows.
_KEY_ORDER = (
    "hostname", "fqdn", "prefer_fqdn_over_hostname", "manage_etc_hosts", "timezone",
    "groups", "users", "disable_root", "ssh_pwauth", "ssh_genkeytypes", "ca_certs", "apt", "package_update", "packages",
    "swap", "bootcmd", "write_files", "runcmd", "final_message",
)
_LIST_KEYS = {"users", "packages", "write_files", "runcmd", "bootcmd"}


def assemble(plan, steps=None) -> dict:
    """Merge the fragments of every step into one cloud-config dict."""
    if steps is None:
        from .steps import STEPS as steps
    merged: dict = {}
    for step in steps:
        for key, value in step.build(plan).items():
            if key in _LIST_KEYS:
                merged.setdefault(key, []).extend(value)
            elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                _merge_dict(merged[key], value)
            elif key in merged and merged[key] != value:
                raise AssertionError(f"steps disagree on {key!r}")
            else:
                merged[key] = value
    ordered = {k: merged[k] for k in _KEY_ORDER if k in merged}
    ordered.update({k: v for k, v in merged.items() if k not in ordered})
    return ordered


def _merge_dict(into: dict, other: dict) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge_dict(into[key], value)
        else:
            into[key] = value


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    """Multi-line strings (file contents) as literal blocks, readable in a
    form. libyaml's emitter when PyYAML has it: the same text, faster."""


def _str_representer(dumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(cloud_config: dict) -> str:
    body = yaml.dump(cloud_config, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=4096)
    return "#cloud-config\n" + body


def to_mime(text: str) -> bytes:
    """A multipart/mixed message with one text/cloud-config part."""
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    # A boundary derived from the content keeps the output deterministic.
    boundary = "===============" + hashlib.sha256(text.encode()).hexdigest()[:20] + "=="
    message = MIMEMultipart(boundary=boundary)
    part = MIMEText(text, "cloud-config", "utf-8")
    part.add_header("Content-Disposition", "attachment", filename="cloud-config.yaml")
    message.attach(part)
    return message.as_bytes()


def to_gzip(data: bytes) -> bytes:
    # mtime=0 so the same input always compresses to the same bytes.
    return gzip.compress(data, compresslevel=9, mtime=0)


def fit(cloud_config: dict, limit: int) -> tuple[dict, str]:
    """``cloud_config`` and its YAML, as they are when the YAML fits
    ``limit`` bytes; else with the largest write_files contents sent
    gzip+base64 (cloud-init unpacks them: the files on the server are the
    same), largest first, until it fits or nothing is left to pack."""
    text = to_yaml(cloud_config)
    if len(text.encode("utf-8")) <= limit:
        return cloud_config, text
    packed = dict(cloud_config)
    files = [dict(entry) for entry in cloud_config.get("write_files", [])]
    packed["write_files"] = files
    originals = {id(entry): entry["content"] for entry in files if "content" in entry}
    for entry in sorted(files, key=lambda e: len(e.get("content", "")), reverse=True):
        if "encoding" in entry or len(entry.get("content", "")) < 1024:
            continue
        _pack(entry, entry["content"])
        text = to_yaml(packed)
        if len(text.encode("utf-8")) <= limit:
            return packed, text
    # Still too big: the shell scripts go without their comment lines.
    for entry in files:
        original = originals.get(id(entry), "")
        if entry.get("encoding") == "gz+b64" and original.startswith("#!/bin/"):
            _pack(entry, strip_shell_comments(original))
    text = to_yaml(packed)
    if len(text.encode("utf-8")) <= limit:
        return packed, text
    # Still too big: the root-owned files travel together, one gzip stream
    # compresses better than one per file, unpacked by the first bootcmd.
    archived = archive_files(cloud_config, strip_comments=True)
    return archived, to_yaml(archived)


# The files' unpacker, run by cloud-init's own python3 (so on every image
# cloud-init runs on). LZMA (Python's lzma module) compresses a tenth better
# than gzip, and base 94 (below) adds two ninths to the payload where base64
# adds a third. The payload: for each file, its path, mode (octal) and size
# on three lines, then its bytes.
UNPACK = ("import functools,lzma,os,sys\n"
          "s=sys.stdin.buffer.read().strip()\n"
          "d=b\"\".join(functools.reduce(lambda n,c:n*94+c-33,s[i:i+11],0).to_bytes(9,\"big\")for i in range(1,len(s),11))\n"
          "r,d=sys.argv[1],lzma.decompress(d[:len(d)-s[0]+48])\n"
          "while d:\n"
          " p,m,n,d=d.split(b\"\\n\",3);p=os.path.join(r,p.decode().lstrip(\"/\"));m,n=int(m,8),int(n)\n"
          " os.makedirs(os.path.dirname(p),exist_ok=True)\n"
          " with os.fdopen(os.open(p,os.O_WRONLY|os.O_CREAT|os.O_TRUNC,m),\"wb\") as f:f.write(d[:n])\n"
          " os.chmod(p,m);d=d[n:]\n")


def b94encode(data: bytes) -> str:
    """``data`` in the 94 printable ASCII characters other than space
    ("!" to "~"; a quoted here-document and a YAML block take them all as
    they are): 9 bytes in 11 characters (94**11 > 256**9; base85 puts 4 in
    5), after one digit that says how many zero bytes pad the last block."""
    pad = -len(data) % 9
    data += bytes(pad)
    out = [str(pad)]
    for start in range(0, len(data), 9):
        number, digits = int.from_bytes(data[start:start + 9], "big"), []
        for _ in range(11):
            number, digit = divmod(number, 94)
            digits.append(chr(33 + digit))
        out.append("".join(reversed(digits)))
    return "".join(out)


def b94decode(text: str) -> bytes:
    """What ``b94encode`` was given (UNPACK does the same on the server)."""
    raw = text.strip().encode("ascii")
    data = b"".join(functools.reduce(lambda n, c: n * 94 + c - 33, raw[i:i + 11], 0).to_bytes(9, "big")
                    for i in range(1, len(raw), 11))
    return data[:len(data) - int(raw[:1])]


# LZMA's strongest preset, tuned for text: no alignment of positions (pb=0;
# the default, 4 bytes, suits binaries), 60 bytes less on a 16 KiB target.
# The .lzma header carries these, so the unpacker needs no change.
TEXT_LZMA = {"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "lc": 3, "lp": 0, "pb": 0}


def archive_files(cloud_config: dict, strip_comments: bool = False) -> dict:
    """``cloud_config`` with its root-owned write_files moved into one
    compressed payload in a bootcmd that unpacks it before anything uses
    them (bootcmd runs before write_files, on every boot: once per instance,
    then never again, so first boot's changes to the files stay). The other
    bootcmd scripts travel in it too, as files their bootcmd runs: unpacked
    just before on first boot, still there on every later one."""
    keep, archived = [], []
    for entry in cloud_config.get("write_files", []):
        owned_by_root = entry.get("owner", "root:root") in ("root:root", "root")
        plain = set(entry) <= {"path", "owner", "permissions", "content", "encoding"}
        (archived if owned_by_root and plain else keep).append(entry)
    if not archived:
        return cloud_config
    commands = []
    for number, command in enumerate(cloud_config.get("bootcmd", []), start=1):
        if isinstance(command, list) and command[:2] == ["sh", "-c"] and len(command) == 3:
            path = f"{LIB_DIR}/bootcmd-{number}.sh"
            script = strip_shell_comments(command[2], shebang=False) if strip_comments else command[2]
            archived.append({"path": path, "permissions": "0600", "content": script})
            command = ["sh", path]
        commands.append(command)
    payload = b94encode(lzma.compress(_records(archived, strip_comments), format=lzma.FORMAT_ALONE,
                                      filters=[TEXT_LZMA]))
    unpack = (f"m={UNPACKED_MARK}; [ ! -e \"$m\" ] || exit 0\n"
              f"python3 -c '{UNPACK}' / <<'BAKERY_FILES' && sync && touch \"$m\"\n"
              f"{payload}\nBAKERY_FILES\n")
    out = dict(cloud_config)
    out["bootcmd"] = [["sh", "-c", unpack], *commands]
    if keep:
        out["write_files"] = keep
    else:
        out.pop("write_files", None)
    return out


# Configuration packed without its comment lines, by folder: what a comment
# line starts with there. None of these files has a value that spans lines
# (supervisor's values are refused with a line break, templating.py). Not
# /etc/issue, where "#" is text, nor SQL, where a PostgreSQL string may span lines.
COMMENT_MARKERS = {
    "/etc/ssh/": ("#",), "/etc/sysctl.d/": ("#",), "/etc/modprobe.d/": ("#",), "/etc/nginx/": ("#",),
    "/etc/systemd/": ("#",), "/etc/supervisor/": ("#", ";"), "/etc/mysql/": ("#", ";"),
    "/etc/apt/apt.conf.d/": ("//",),
}


def comment_markers(path: str) -> tuple:
    """What a comment line of the configuration file ``path`` starts with;
    empty where its comments are kept."""
    return next((marks for folder, marks in COMMENT_MARKERS.items() if path.startswith(folder)), ())


def _records(entries: list, strip_comments: bool) -> bytes:
    """What UNPACK reads: each file's path, mode and size, then its bytes."""
    out = io.BytesIO()
    for entry in entries:
        content = entry["content"]
        if entry.get("encoding") == "gz+b64":
            content = gzip.decompress(base64.b64decode(content)).decode("utf-8")
        if strip_comments:
            content = without_comments(entry["path"], content)
        data = content.encode("utf-8")
        out.write(f"{entry['path']}\n{entry.get('permissions', '0644')}\n{len(data)}\n".encode() + data)
    return out.getvalue()


def _pack(entry: dict, content: str) -> None:
    entry["content"] = base64.b64encode(to_gzip(content.encode("utf-8"))).decode("ascii")
    entry["encoding"] = "gz+b64"


def without_comments(path: str, content: str) -> str:
    """What a packed file ``path`` carries when every byte counts: a shell
    script or a configuration file without its comment lines."""
    if content.startswith("#!/bin/"):
        return strip_shell_comments(content)
    markers = comment_markers(path)
    if markers:
        return "".join(line for line in content.splitlines(keepends=True) if not line.lstrip().startswith(markers))
    return content


def strip_shell_comments(script: str, shebang: bool = True) -> str:
    """``script`` without its comment lines and blank lines: the shebang
    (the first line, when ``shebang``) and shellcheck directives stay, and a
    here-document is kept as it is."""
    out, heredoc = [], None
    for number, line in enumerate(script.splitlines(keepends=True)):
        bare = line.strip()
        if heredoc is not None:
            out.append(line)
            if bare == heredoc:
                heredoc = None
            continue
        match = re.search(r"<<-?\s*'?\"?([A-Za-z_][A-Za-z0-9_]*)'?\"?\s*$", bare)
        if match and "<<<" not in bare:
            heredoc = match.group(1)
        if (number or not shebang) and (not bare or (bare.startswith("#") and not bare.startswith("# shellcheck"))):
            continue
        out.append(line)
    return "".join(out)


def emit(cloud_config: dict, fmt: str = "yaml", limit: int | None = None) -> tuple[bytes, int]:
    """Return (artifact bytes, size the provider counts against its limit).
    With ``limit``, uncompressed formats are first made to fit it (``fit``)."""
    if limit is not None and fmt != "gzip-base64":
        cloud_config, text = fit(cloud_config, limit)
    else:
        text = to_yaml(cloud_config)
    if fmt == "yaml":
        data = text.encode("utf-8")
        return data, len(data)
    if fmt == "mime":
        data = to_mime(text)
        return data, len(data)
    if fmt == "gzip-base64":
        packed = to_gzip(text.encode("utf-8"))
        if limit is not None and len(packed) > limit:
            # Too big: the files go without their comment lines.
            files = [{**entry, "content": without_comments(entry["path"], entry["content"])}
                     if "content" in entry and "encoding" not in entry else entry
                     for entry in cloud_config.get("write_files", [])]
            packed = to_gzip(to_yaml({**cloud_config, "write_files": files}).encode("utf-8"))
        return base64.b64encode(packed) + b"\n", len(packed)
    raise BakeryError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def check_size(size: int, fmt: str, target) -> None:
    if size <= target.userdata_limit:
        return
    hint = ""
    if fmt != "gzip-base64" and target.gzip:
        hint = f"; try --format gzip-base64 ({target.name} accepts compressed user-data)"
    elif fmt != "gzip-base64":
        hint = f"; {target.name} does not accept compressed user-data: remove packages or commands, or bake an image with `bakery packer`"
    # The config does not fit the target, like a memory check: exit 2.
    raise UsageError(f"rendered user-data is {size} bytes, over {target.name}'s limit of {target.userdata_limit} bytes{hint}")
