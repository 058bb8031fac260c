"""The user-data every output carries: the assembled cloud-config as bytes
in the asked format, fitted to the target's size limit and refused when it
still does not fit. And cloud-init's own schema check of it, for
`bakery validate`."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from ..cloudconfig import check_size, emit
from ..errors import BakeryError


def user_data(rendered, fmt: str = "yaml") -> bytes:
    """The rendered config as user-data for its target; UsageError when too big."""
    target = rendered.plan.target
    data, size = emit(rendered.cloud_config, fmt, target.userdata_limit)
    check_size(size, fmt, target)
    return data


def cloud_init_schema(data: bytes) -> Optional[str]:
    """cloud-init's verdict on ``data`` ("valid"), or None when cloud-init is
    not installed here; BakeryError when it rejects it."""
    if not shutil.which("cloud-init"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "user-data"
        path.write_bytes(data)
        result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BakeryError("cloud-init schema rejected the rendered user-data:\n" + (result.stderr or result.stdout).strip())
    return "valid"
