"""SSH public keys: reading them from the config or the workstation, and
refusing anything that is not a valid OpenSSH public key. Key material that
looks private is never echoed back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

# The order ssh-copy-id and ssh itself prefer.
DEFAULT_KEY_FILES = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")
MIN_RSA_BITS = 2048


class KeyProblem(ValueError):
    """Why a key was refused; the message never contains the key."""


def looks_private(text: str) -> bool:
    return "PRIVATE KEY" in text and "-----BEGIN" in text


def check_public_key(line: str) -> str:
    """Return the normalised key line (type, base64, comment) or raise KeyProblem."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    text = line.strip()
    if looks_private(text):
        raise KeyProblem("this is a PRIVATE key; give the public key (the .pub file) instead, and keep the private key secret")
    if "\n" in text:
        raise KeyProblem("expected one public key per item, found several lines")
    parts = text.split()
    if len(parts) < 2:
        raise KeyProblem("not an OpenSSH public key (expected 'TYPE BASE64 [comment]', as in ~/.ssh/id_ed25519.pub)")
    try:
        key = load_ssh_public_key(" ".join(parts[:2]).encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise KeyProblem(f"not a valid OpenSSH public key ({_reason(exc)})") from None
    except Exception:  # cryptography raises UnsupportedAlgorithm for e.g. DSA
        raise KeyProblem("unsupported key type; use ed25519, ecdsa or rsa (>= 2048 bits)") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise KeyProblem(f"RSA key of {key.key_size} bits is too weak; use at least {MIN_RSA_BITS} bits, or better ssh-keygen -t ed25519")
    if not isinstance(key, (rsa.RSAPublicKey, ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
        raise KeyProblem("unsupported key type; use ed25519, ecdsa or rsa (>= 2048 bits)")
    return " ".join(parts)


def _reason(exc: Exception) -> str:
    msg = str(exc)
    # cryptography's messages do not contain the key; keep them short anyway.
    return msg.splitlines()[0][:120] if msg else "unreadable key data"


def shown(item: str) -> str:
    """``item`` as a message may show it: not when it may be key material
    pasted where a path was expected (long, or holding key-like text)."""
    text = str(item)
    if len(text) > 120 or looks_private(text) or "\n" in text:
        return "(not shown: it looks like key material, which bakery never prints)"
    return text


def read_key_file(path: Path) -> str:
    """Read one public key file; refuse private key files without showing them."""
    from .fsutil import TooLarge, read_small

    try:
        data = read_small(path, 64 * 1024)
    except FileNotFoundError:
        raise KeyProblem(f"key file {shown(path)} not found; give a public key line ('ssh-ed25519 AAAA...') "
                         "or the path of a .pub file") from None
    except TooLarge:
        raise KeyProblem(f"{shown(path)} is far larger than a public key file") from None
    except OSError as exc:
        raise KeyProblem(f"cannot read key file {shown(path)}: {exc.strerror}") from None
    text = data.decode("utf-8", errors="replace")
    if looks_private(text) or text.startswith("-----BEGIN OPENSSH"):
        raise KeyProblem(f"{path} is a PRIVATE key file; point to the public key ({path.name}.pub) instead")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise KeyProblem(f"{path} should hold exactly one public key line, found {len(lines)}")
    try:
        return check_public_key(lines[0])
    except KeyProblem as exc:
        raise KeyProblem(f"{path}: {exc}") from None


def is_key_path(item: str) -> bool:
    """A key item is a path unless it starts like a key (or private key) text."""
    head = item.lstrip()
    return not (head.startswith(("ssh-", "ecdsa-", "sk-", "-----BEGIN")) or " " in head.strip())


def resolve_key_path(item: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(item))
    return path if path.is_absolute() else base_dir / path


def default_workstation_key(home: Optional[Path] = None) -> Optional[Path]:
    """The first of ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub that exists."""
    ssh_dir = (home or Path.home()) / ".ssh"
    for name in DEFAULT_KEY_FILES:
        candidate = ssh_dir / name
        if candidate.is_file():
            return candidate
    return None
