"""Elasticsearch (MISSION step 7), only when search.elasticsearch is on; the
plan already refused it on machines with 2 GiB of memory or less.

It is not in the Debian or Ubuntu archives, so Elastic's own apt repository
is added through cloud-init's apt module; the signing key is fetched from
the Ubuntu key server by its fingerprint (a key block would not fit the
16 KiB user-data budget). It listens on localhost only, single-node, with
security off: nothing outside the machine can reach it. Installed and
configured in the image (its files are installed by the first-boot search
step, once the package has made their group); each server enables and
starts it on its first boot."""

from __future__ import annotations

from ..templating import render
from ..layout import paths

ELASTIC_APT = "deb https://artifacts.elastic.co/packages/8.x/apt stable main"
ELASTIC_KEY = "46095ACC8548582C1A2699A9D27D666CD88E42B4"  # Elasticsearch (Elasticsearch Signing Key)


def build(plan) -> dict:
    if not plan.elasticsearch or plan.app is None or not plan.shared:
        return {}
    heap = max(512, plan.memory_mib // 4)
    where = paths(plan)
    return {
        "apt": {"sources": {"elastic-8.x": {"source": ELASTIC_APT, "keyid": ELASTIC_KEY,
                                             "keyserver": "keyserver.ubuntu.com"}}},
        "packages": ["elasticsearch"],
        "write_files": [{"path": where.es_conf, "owner": "root:root",
                         "permissions": "0600", "content": render("elasticsearch.yml.j2", plan=plan)},
                        # A quarter of the memory: the database and gunicorn need the rest.
                        {"path": where.es_jvm_options, "owner": "root:root",
                         "permissions": "0644", "content": f"-Xms{heap}m\n-Xmx{heap}m\n"}],
    }
