"""The resolver, one table per config section (Butane's style): a config
fragment and a target in, the plan's fields out; and a fragment that breaks
a rule in, the located problem out. Plus the guard that every setting the
schema defines is read when a plan is made: a key the resolver never looks
at is a key that silently does nothing."""

from __future__ import annotations

import copy

import pytest

from bakery import plan as plan_module
from bakery.defaults import leaves, target_overrides
from bakery.errors import ConfigError
from bakery.loader import parse_document
from bakery.plan import resolve
from bakery.secrets_store import SecretStore
from bakery.targets import TARGETS, get_target

from stack_helpers import public_key

KEY = public_key()
APP = {"repo": "https://example.com/you/My_Blog.git"}


def plan_for(tmp_path, config: dict, target: str = "generic", **options):
    doc = parse_document(_yaml(config), str(tmp_path / "bakery.yaml"), tmp_path, {})
    return resolve(doc, get_target(target), SecretStore(tmp_path / "secrets.yaml"), home=tmp_path, **options)


def _yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


def with_base(fragment: dict, app: bool = True) -> dict:
    config = {"admin": {"ssh_keys": [KEY]}}
    if app:
        config["app"] = dict(APP)
    for section, value in fragment.items():
        if isinstance(value, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **value}
        else:
            config[section] = value
    return config


def field(plan, dotted: str):
    node = plan
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


# (case, config fragment, target, {plan field: value})
CASES = {
    "admin": [
        ("the target's user", {}, "generic", {"admin.name": "ubuntu", "admin.shell": "/bin/bash"}),
        ("pi on a Raspberry Pi", {}, "raspberry-pi", {"admin.name": "pi"}),
        ("named", {"admin": {"name": "deploy", "shell": "/bin/zsh"}}, "generic",
         {"admin.name": "deploy", "admin.shell": "/bin/zsh", "app.user": "my_blog", "app.home": "/home/my_blog"}),
        ("import ids", {"admin": {"ssh_import_id": ["gh:alice"]}}, "generic", {"admin.import_ids": ["gh:alice"]}),
    ],
    "host": [
        ("no name", {}, "generic", {"hostname": None, "fqdn": None, "web.server_name": "_"}),
        ("name and domain", {"host": {"hostname": "web", "domain": "example.com"}}, "generic",
         {"fqdn": "web.example.com", "web.server_name": "web.example.com", "web.name_from_host": True,
          "mail.domain": "example.com"}),
        ("locale and zone", {"host": {"timezone": "Europe/Paris", "locale": "fr_FR.UTF-8", "keyboard": "fr"}}, "generic",
         {"timezone": "Europe/Paris", "locale": "fr_FR.UTF-8", "keyboard": "fr"}),
    ],
    "ssh": [
        ("locked down", {}, "generic", {"password_authentication": False, "permit_root_login": False, "ssh_forwarding": False}),
        ("forwarding on", {"ssh": {"forwarding": True}}, "generic", {"ssh_forwarding": True}),
    ],
    "firewall": [
        ("nginx ports", {}, "generic", {"firewall": True, "open_ports": ["22/tcp", "80/tcp", "443/tcp"],
                                        "limited_ports": ["22/tcp"]}),
        ("SSH not rate-limited", {"firewall": {"ssh_rate_limit": False}}, "generic", {"limited_ports": []}),
        ("gunicorn's port without nginx", {}, "raspberry-pi", {"open_ports": ["22/tcp", "8000/tcp"]}),
        ("extra rules once", {"firewall": {"allow": [8080, "22/tcp", "60000:60010/udp"]}}, "generic",
         {"open_ports": ["22/tcp", "80/tcp", "443/tcp", "8080", "60000:60010/udp"]}),
        ("off", {"firewall": {"enabled": False}}, "generic", {"firewall": False}),
    ],
    "packages_and_swap": [
        ("defaults", {}, "generic", {"extra_packages": [], "swap_size": "1G"}),
        ("listed", {"packages": ["htop"], "swap": "2G"}, "generic", {"extra_packages": ["htop"], "swap_size": "2G"}),
        ("no swap", {"swap": False}, "generic", {"swap_size": None}),
        ("auto swap on a big machine", {}, "hetzner", {"swap_size": None}),
    ],
    "network": [
        ("defaults", {}, "generic", {"retry_seconds": 900, "apt_proxy": None, "pip_index_url": None, "wifi": None}),
        ("set", {"network": {"retry_minutes": 2, "apt_proxy": "http://proxy:3142",
                             "pip_index_url": "https://pypi.example.com/simple"}}, "generic",
         {"retry_seconds": 120, "apt_proxy": "http://proxy:3142", "pip_index_url": "https://pypi.example.com/simple"}),
        ("open wifi", {"network": {"wifi": {"ssid": "home", "country": "GB"}}}, "raspberry-pi",
         {"wifi.ssid": "home", "wifi.psk": None, "wifi.country": "GB", "wifi.hidden": False}),
    ],
    "database": [
        ("mysql from the app's name", {}, "generic",
         {"database.engine": "mysql", "database.name": "my_blog", "database.user": "my_blog",
          "database.charset": "utf8mb4", "database.collation": "utf8mb4_bin"}),
        ("sqlite on a Pi", {}, "raspberry-pi",
         {"database.engine": "sqlite", "database.path": "/var/lib/my_blog/my_blog.db"}),
        ("sqlite relative to the data folder", {"database": {"engine": "sqlite", "path": "db/blog.sqlite"}}, "generic",
         {"database.path": "/var/lib/my_blog/db/blog.sqlite"}),
        ("sqlite under /var/lib", {"database": {"engine": "sqlite", "path": "/var/lib/my_blog/db.sqlite"}}, "generic",
         {"database.path": "/var/lib/my_blog/db.sqlite", "database.url": "sqlite:////var/lib/my_blog/db.sqlite"}),
        ("postgresql named", {"database": {"engine": "postgresql", "name": "blog", "user": "bloguser"}}, "generic",
         {"database.name": "blog", "database.user": "bloguser"}),
        ("a long name fits MySQL's 32", {"app": {"repo": "https://x/" + "a" * 40 + ".git"}}, "generic",
         {"database.user": "a" * 32, "database.name": "a" * 40}),
    ],
    "app": [
        ("from the repository", {}, "generic",
         {"app.name": "my_blog", "app.ref": "main", "app.module": "my_blog:app", "app.base": "/home/my_blog/my_blog",
          "app.dir": "/home/my_blog/my_blog/current", "app.venv": "/home/my_blog/my_blog/current/venv",
          "app.health": "/", "app.health_timeout": 60, "app.requirements": "requirements.txt", "app.port": 8000,
          "app.bind": "127.0.0.1:8000", "app.static_dir": None, "app.static_url": "/static",
          "app.pip_packages": ["gunicorn", "pymysql", "cryptography"], "app.user": "my_blog",
          "app.user_is_admin": False, "app.run_user": "my_blog-web", "app.data_dir": "/var/lib/my_blog",
          "app.repo_over_ssh": False}),
        ("over SSH, with a deploy key", {"app": {"repo": "git@github.com:me/my_blog.git"}}, "generic",
         {"app.repo_over_ssh": True, "app.name": "my_blog"}),
        ("ssh:// too", {"app": {"repo": "ssh://git@git.example.com:2222/me/blog.git"}}, "generic",
         {"app.repo_over_ssh": True}),
        ("the tutorial's: the admin owns the code", {"app": {"user": "ubuntu", "name": "blog"}}, "generic",
         {"app.user": "ubuntu", "app.dir": "/home/ubuntu/blog/current", "app.user_is_admin": True, "app.run_user": "blog-web"}),
        ("a long name's running user fits 32", {"app": {"name": "a" * 32}}, "generic",
         {"app.run_user": "a" * 28 + "-web"}),
        ("workers as YAML floats", {"app": {"workers": 2.0, "port": 8001.0}}, "generic",
         {"app.workers": 2, "app.port": 8001, "app.bind": "127.0.0.1:8001"}),
        ("one worker on a Pi, on every address", {}, "raspberry-pi", {"app.workers": 1, "app.bind": "0.0.0.0:8000"}),
        ("sized workers", {}, "hetzner", {"app.workers": 3}),
        ("static inside the checkout", {"app": {"static": "app/static", "static_url": "/assets/"}}, "generic",
         {"app.static_dir": "/home/my_blog/my_blog/current/app/static", "app.static_url": "/assets"}),
        ("a listed package is not added twice", {"app": {"pip_packages": ["Flask-Login", "PyMySQL>=1"]},
                                                 "database": {"engine": "mysql"}}, "generic",
         {"app.pip_packages": ["gunicorn", "Flask-Login", "cryptography", "PyMySQL>=1"]}),
        ("environment and .env", {"app": {"environment": {"FLASK_APP": "x.py"}, "dotenv": {"DEBUG": False, "N": 2}},
                                  "mail": {"enabled": False}, "database": {"engine": "none"}}, "generic",
         {"app.environment": {"FLASK_APP": "x.py"}, "app.dotenv.DEBUG": "false", "app.dotenv.N": "2"}),
        ("commands", {"app": {"setup": ["make"], "migrate": ["flask db upgrade"]}}, "generic",
         {"app.setup": ["make"], "app.migrate": ["flask db upgrade"]}),
        ("a pinned commit", {"app": {"commit": "ab" * 20}}, "generic", {"app.commit": "ab" * 20}),
        ("http on purpose", {"app": {"repo": "http://git.lan/app.git", "insecure_transport": True}}, "generic",
         {"app.repo": "http://git.lan/app.git", "app.commit": None}),
    ],
    "web": [
        ("self-signed behind nginx", {}, "generic",
         {"web.nginx": True, "web.tls": "self-signed", "web.cert_days": 365, "web.cert_key": "ecdsa",
          "web.cert_file": "/etc/ssl/bakery/my_blog.crt", "web.key_file": "/etc/ssl/bakery/my_blog.key"}),
        ("no nginx on a Pi", {}, "raspberry-pi", {"web.nginx": False, "web.tls": "none"}),
        ("let's encrypt", {"web": {"tls": "letsencrypt", "domain": "blog.example.com", "email": "me@example.com"}},
         "generic", {"web.tls": "letsencrypt", "web.server_name": "blog.example.com", "web.email": "me@example.com",
                     "web.name_from_host": False, "web.acme_server": "https://acme-v02.api.letsencrypt.org/directory"}),
        ("let's encrypt's staging", {"web": {"tls": "letsencrypt", "domain": "b.example.com", "email": "me@example.com",
                                             "acme_server": "https://acme-staging-v02.api.letsencrypt.org/directory"}},
         "generic", {"web.acme_server": "https://acme-staging-v02.api.letsencrypt.org/directory"}),
        ("certificate settings", {"web": {"cert_days": 30, "cert_key": "rsa", "cert_bits": 2048}}, "generic",
         {"web.cert_days": 30, "web.cert_key": "rsa", "web.cert_bits": 2048}),
    ],
    "mail_and_search": [
        ("on, named after the host", {"host": {"hostname": "web"}}, "generic",
         {"mail.enabled": True, "mail.domain": "web", "elasticsearch": False}),
        ("off", {"mail": {"enabled": False}}, "generic", {"mail.enabled": False}),
        ("a mail domain", {"mail": {"domain": "example.org", "dkim_selector": "s1"}}, "generic",
         {"mail.domain": "example.org", "mail.dkim_selector": "s1", "mail.dkim_public_key": None}),
        ("elasticsearch", {"search": {"elasticsearch": True}}, "hetzner",
         {"elasticsearch": True, "app.dotenv.ELASTICSEARCH_URL": "http://localhost:9200"}),
    ],
}


@pytest.mark.parametrize("section, case, fragment, target, expected", [
    (section, case, fragment, target, expected)
    for section, rows in CASES.items() for case, fragment, target, expected in rows
], ids=lambda v: v if isinstance(v, str) else None)
def test_resolver_table(tmp_path, section, case, fragment, target, expected):
    plan = plan_for(tmp_path, with_base(fragment), target)
    for dotted, value in expected.items():
        if ".dotenv." in dotted:
            head, key = dotted.rsplit(".", 1)
            actual = field(plan, head)[key]
        else:
            actual = field(plan, dotted)
        assert actual == value, f"{case}: {dotted} is {actual!r}, expected {value!r}"


# (case, config fragment, target, problem's key path, words of the message)
PROBLEMS = [
    ("root admin", {"admin": {"name": "root"}}, "generic", "admin.name", "root stays locked out"),
    ("nologin shell", {"admin": {"shell": "/usr/sbin/nologin"}}, "generic", "admin.shell", "refuses every login"),
    ("removing sshd", {"packages": ["openssh-server-"]}, "generic", "packages[0]", "makes apt remove openssh-server"),
    ("root app", {"app": {"user": "root"}}, "generic", "app.user", "must not belong to root"),
    ("owner is the running user", {"app": {"user": "my_blog-web"}}, "generic", "app.user", "the user the app runs as"),
    ("static outside", {"app": {"static": "app/../../../../etc"}}, "generic", "app.static", "inside the app's checkout"),
    ("the checkout as static", {"app": {"static": "."}}, "generic", "app.static", "inside the app's checkout"),
    ("sqlite outside", {"database": {"engine": "sqlite", "path": "../../../app.db"}}, "generic", "database.path",
     "must be in the app's data folder /var/lib/my_blog/"),
    ("sqlite in /tmp", {"database": {"engine": "sqlite", "path": "/tmp/app.db"}}, "generic", "database.path",
     "must be in the app's data folder"),
    ("collation of another charset", {"database": {"charset": "utf8", "collation": "utf8mb4_bin"}}, "generic",
     "database.collation", "does not belong to character set 'utf8'"),
    ("tls without nginx", {"web": {"nginx": False, "tls": "letsencrypt"}}, "generic", "web.tls", "needs nginx"),
    ("an ACME directory without let's encrypt", {"web": {"acme_server": "https://ca.example.com/dir"}}, "generic",
     "web.acme_server", "only with tls: letsencrypt"),
    ("let's encrypt without a domain", {"web": {"tls": "letsencrypt", "email": "a@b.c"}}, "generic", "web.tls",
     "needs a domain name"),
    ("let's encrypt without an email", {"web": {"tls": "letsencrypt", "domain": "x.example.com"}}, "generic",
     "web.tls", "needs a contact address"),
    ("reserved variable", {"app": {"environment": {"PATH": "/x"}}}, "generic", "app.environment.PATH",
     "cannot be overridden"),
    ("multi-line .env value", {"app": {"dotenv": {"A": "x\ny"}}}, "generic", "app.dotenv.A", "line break"),
    ("port range without protocol", {"firewall": {"allow": ["6000:6010"]}}, "generic", "firewall.allow[0]",
     "needs a protocol"),
    ("elasticsearch on 1 GiB", {"search": {"elasticsearch": True}}, "generic", "search.elasticsearch",
     "needs more than 2 GiB"),
    ("wifi without a country", {"network": {"wifi": {"ssid": "home"}}}, "raspberry-pi", "network.wifi",
     "needs a country"),
    ("plain http repository", {"app": {"repo": "http://git.example.com/app.git"}}, "generic", "app.repo",
     "does not authenticate the git server"),
    ("git:// repository", {"app": {"repo": "git://git.example.com/app.git"}}, "generic", "app.repo",
     "app.insecure_transport: true"),
    ("credentials in the URL", {"app": {"repo": "https://me:ghp_secret@github.com/me/app.git"}}, "generic", "app.repo",
     "holds credentials"),
    ("a password in an ssh URL", {"app": {"repo": "ssh://git:hunter2@git.example.com/app.git"}}, "generic",
     "app.repo", "holds credentials"),
    ("ssid over 32 bytes", {"network": {"wifi": {"ssid": "é" * 20, "country": "GB"}}}, "raspberry-pi",
     "network.wifi.ssid", "at most 32 bytes"),
]


@pytest.mark.parametrize("case, fragment, target, where, words", PROBLEMS, ids=[row[0] for row in PROBLEMS])
def test_resolver_problems_table(tmp_path, case, fragment, target, where, words):
    with pytest.raises(ConfigError) as caught:
        plan_for(tmp_path, with_base(fragment), target)
    messages = [str(p) for p in caught.value.problems]
    assert any(f": {where}: " in m and words in m for m in messages), messages


def test_sections_without_an_app_are_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        plan_for(tmp_path, with_base({"database": {"engine": "sqlite"}, "web": {"nginx": False}}, app=False))
    assert [p.path for p in caught.value.problems] == [("database",), ("web",)]


def test_every_problem_is_reported_at_once(tmp_path):
    fragment = {"admin": {"name": "root"}, "app": {"user": "root"}, "firewall": {"allow": ["1:2"]},
                "search": {"elasticsearch": True}}
    with pytest.raises(ConfigError) as caught:
        plan_for(tmp_path, with_base(fragment))
    assert {p.path for p in caught.value.problems} == {("admin", "name"), ("app", "user"), ("firewall", "allow", 0),
                                                      ("search", "elasticsearch")}


def test_checks_draw_no_secrets(tmp_path):
    store = tmp_path / "secrets.yaml"
    with pytest.raises(ConfigError):
        plan_for(tmp_path, with_base({"admin": {"name": "root"}}))
    assert not store.exists()


# --- every schema leaf is read ------------------------------------------------

class Recorder(dict):
    """A config section that notes each key read from it, by dotted path."""

    def __init__(self, data: dict, prefix: str, seen: set):
        super().__init__({k: Recorder(v, f"{prefix}{k}.", seen) if isinstance(v, dict) else v for k, v in data.items()})
        self._prefix, self._seen = prefix, seen

    def _note(self, key):
        self._seen.add(f"{self._prefix}{key}")

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._note(key)
        return super().get(key, default)

    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)


FULL = [
    # Each config sets every key its engine and web setting can read.
    ({"admin": {"name": "deploy", "ssh_import_id": ["gh:alice"], "shell": "/bin/bash"},
      "host": {"hostname": "web", "domain": "example.com", "timezone": "UTC", "locale": "C.UTF-8", "keyboard": "us"},
      "ssh": {"password_authentication": False, "permit_root_login": False, "forwarding": True},
      "firewall": {"enabled": True, "allow": [8080]}, "packages": ["htop"], "swap": "1G",
      "network": {"apt_proxy": "http://p:3142", "pip_index_url": "https://pypi.example.com/simple", "ca_certs": [],
                  "retry_minutes": 5, "wifi": {"ssid": "home", "password": "longenough", "country": "GB", "hidden": True}},
      "database": {"engine": "mysql", "name": "db", "user": "u", "charset": "utf8mb4", "collation": "utf8mb4_bin"},
      "app": {"name": "blog", "repo": "https://x/blog.git", "ref": "v1", "user": "blog", "module": "blog:app",
              "requirements": "req.txt", "pip_packages": ["x"], "environment": {"A": "1"}, "dotenv": {"B": "2"},
              "setup": ["true"], "migrate": ["true"], "static": "static", "static_url": "/s", "port": 8001, "workers": 2},
      "web": {"nginx": True, "domain": "blog.example.com", "tls": "letsencrypt", "email": "a@b.c", "cert_days": 30,
              "cert_key": "rsa", "cert_bits": 2048, "acme_server": "https://ca.example.com/acme/directory"},
      "mail": {"enabled": True, "domain": "example.com", "dkim_selector": "s1"},
      "search": {"elasticsearch": True}}, "hetzner"),
    ({"admin": {"ssh_keys": [KEY]}, "database": {"engine": "sqlite", "path": "data/x.db"},
      "app": {"repo": "http://git.lan/blog.git", "insecure_transport": True,
              "commit": "0123456789abcdef0123456789abcdef01234567"}}, "raspberry-pi"),
]


def test_every_schema_leaf_is_read_by_the_resolver(tmp_path, monkeypatch):
    seen: set = set()
    fill = plan_module.fill
    monkeypatch.setattr(plan_module, "fill", lambda data, target: Recorder(fill(data, target), "", seen))
    for config, target in FULL:
        config = copy.deepcopy(config)
        config.setdefault("admin", {}).setdefault("ssh_keys", [KEY])
        plan_for(tmp_path, config, target, memory_mib=4096)
    # mail.dkim_public_key is read, but only a valid key gets far enough to
    # be set in a table case; it has its own tests in test_hostile_input.
    unread = sorted(path for path, _ in leaves() if path not in seen)
    assert unread == [], f"schema keys the resolver never reads: {unread}"


def test_target_defaults_name_schema_keys():
    keys = {path for path, _ in leaves()}
    for target in TARGETS.values():
        assert set(target.defaults) <= keys, target.name
    assert target_overrides()["web.nginx"] == {"raspberry-pi": False}
