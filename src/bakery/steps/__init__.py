"""One module per concern. Each exposes ``build(plan) -> dict``: a fragment of
cloud-config (plain data). cloudconfig.assemble merges the fragments in the
order of STEPS."""

from . import users, ssh, system, hardening, packages, search, database, app, web, raspberry_pi, firstboot

# Order matters only for lists that are concatenated (write_files, packages).
STEPS = (system, users, ssh, hardening, packages, search, database, app, web, raspberry_pi, firstboot)
