"""The rules that span keys, or the config and its target: what the schema
alone cannot say. Each rule is a function of the document (what the user
wrote, with positions), the config with its defaults filled in, and the
target; it returns its problems. ``problems`` runs them all, so a user sees
every problem at once. Nothing here reads a file or draws a secret."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Callable, Optional

from . import layout
from .errors import Problem
from .loader import Document
from .targets import Target

# Variables the login shell or bakery's scripts own; exporting them from
# ~/.profile would break logins or the app commands.
RESERVED_ENVIRONMENT = frozenset({"_", "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "IFS",
                                  "PS1", "PS2", "PS4", "ENV", "BASH_ENV", "LD_PRELOAD", "LD_LIBRARY_PATH",
                                  "VIRTUAL_ENV", "PYTHONHOME"})
ELASTICSEARCH_MIN_MIB = 2048  # the tutorial's rule: Elasticsearch needs more than 2 GB


@dataclass(frozen=True)
class Context:
    doc: Document  # as written: positions, and whether a key was given at all
    cfg: dict  # with every default filled in
    target: Target
    memory_mib: int

    def given(self, *path) -> bool:
        node = self.doc.data
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True


def problems(doc: Document, cfg: dict, target: Target, memory_mib: int) -> list[Problem]:
    """Every cross-field problem of the config, in the order of RULES."""
    ctx = Context(doc, cfg, target, memory_mib)
    found: list[Problem] = []
    for rule in RULES:
        found += [doc.problem(path, message) for path, message in rule(ctx)]
    return found


def admin_can_log_in(ctx: Context):
    admin = ctx.cfg["admin"]
    if admin["name"] == "root":
        yield ("admin", "name"), ("the admin is a new sudo user, and root stays locked out of SSH: "
                                  "choose another name, e.g. ubuntu")
    if posixpath.basename(admin["shell"]) in ("nologin", "false"):
        yield ("admin", "shell"), (f"{admin['shell']} refuses every login, so the admin could not log in: "
                                   "use a shell such as /bin/bash")
    for i, package in enumerate(ctx.cfg["packages"]):
        if package.endswith("-"):
            yield ("packages", i), (f"a trailing '-' makes apt remove {package[:-1]}; "
                                    "bakery only installs packages: remove the '-'")


def sections_need_app(ctx: Context):
    if ctx.given("app"):
        return
    for section in ("database", "web"):
        if ctx.doc.data.get(section):
            yield (section,), f"the {section} section needs an app section (with at least app.repo)"


def app_runs_unprivileged(ctx: Context):
    if ctx.given("app", "user") and ctx.cfg["app"]["user"] == "root":
        yield ("app", "user"), ("the app's code must not belong to root; leave app.user out to have an "
                                "unprivileged user named after the app, or name one")
    app = ctx.cfg.get("app")
    if app and ctx.given("app", "user") and app["user"] == layout.run_user(app["name"]):
        yield ("app", "user"), (f"{app['user']} is the user the app runs as, which must not own its code: "
                                "choose another name, or leave app.user out")


def repository_over_ssh(url: str) -> bool:
    """ssh://host/path, or scp-like user@host:path (what git takes as SSH)."""
    return url.startswith("ssh://") or ("://" not in url and bool(re.match(r"^[^/:]+@[^/:]+:", url)))


def repository_is_authenticated(ctx: Context):
    """The server runs whatever code it clones: over a transport that
    authenticates the host, and without credentials in the URL (they would
    sit in user-data and in .git/config)."""
    app = ctx.cfg.get("app")
    if not app:
        return
    scheme, _, rest = app["repo"].partition("://")
    host_part = rest.split("/", 1)[0]
    userinfo = host_part.rpartition("@")[0] if "@" in host_part else ""
    # An http(s) user is a credential; an ssh user (git@) is not, its password is.
    if (scheme in ("http", "https") and "@" in host_part) or ":" in userinfo:
        yield ("app", "repo"), ("the URL holds credentials (user:token@host), which would sit in user-data and in "
                                "the server's .git/config; clone a private repository over SSH "
                                "(git@host:you/app.git) with a deploy key instead")
    elif scheme in ("http", "git") and not app["insecure_transport"]:
        yield ("app", "repo"), (f"{scheme}:// does not authenticate the git server, so anyone on the path could "
                                "change the code the server runs; use https:// or SSH, or set "
                                "app.insecure_transport: true for a git server on your own network")


def app_environment(ctx: Context):
    app = ctx.cfg.get("app")
    if not app:
        return
    for key, value in app["dotenv"].items():
        # python-dotenv cannot read a quoted value that spans lines or ends in a
        # backslash, and expands ${NAME} even inside single quotes (1.2.4).
        if re.search(r"[\r\n\x00]|\\$", str(value)):
            yield ("app", "dotenv", key), "a .env value cannot contain a line break or end with a backslash"
        elif "${" in str(value):
            yield ("app", "dotenv", key), \
                "a .env value cannot contain '${': python-dotenv, which reads the .env, would put the variable NAME's value in place of ${NAME}, even in single quotes"
    for key in app["environment"]:
        if key in RESERVED_ENVIRONMENT:
            yield ("app", "environment", key), f"{key} is set by the login shell or bakery's scripts and cannot be overridden here"


def app_paths_stay_inside(ctx: Context):
    """The static folder and the SQLite file: inside the app's own tree, so
    nginx never serves /etc and the update command never chowns / or /tmp."""
    app = ctx.cfg.get("app")
    if not app:
        return
    checkout = layout.app_dir(app["user"], app["name"])
    if "static" in app:
        path = static_dir(checkout, app["static"])
        if path is None:
            yield ("app", "static"), (f"the static folder must be a folder inside the app's checkout "
                                      f"({app['static']!r} is {_normal(checkout, app['static'])}): e.g. app/static")
    if ctx.cfg["database"]["engine"] == "sqlite" and sqlite_path(app["name"], ctx.cfg["database"]["path"]) is None:
        rel, data = ctx.cfg["database"]["path"], layout.app_state_dir(app["name"])
        yield ("database", "path"), (f"the SQLite file must be in the app's data folder {data}/, the only one the "
                                     f"app may write ({rel!r} is {_normal(data, rel)}): use a path such as "
                                     f"{app['name']}.db")


def mysql_collation(ctx: Context):
    database = ctx.cfg["database"]
    if ctx.cfg.get("app") and database["engine"] == "mysql" and not database["collation"].startswith(database["charset"] + "_"):
        yield ("database", "collation"), (f"collation '{database['collation']}' does not belong to character set "
                                          f"'{database['charset']}' (expected {database['charset']}_...)")


def tls_has_what_it_needs(ctx: Context):
    web = ctx.cfg["web"]
    if not ctx.cfg.get("app"):
        return
    if not web["nginx"] and ctx.given("web", "tls") and web["tls"] != "none":
        yield ("web", "tls"), (f"tls: {web['tls']} needs nginx, and web.nginx is false: gunicorn would serve plain "
                               "HTTP on every address; turn nginx on, or set tls: none")
    if ctx.given("web", "acme_server") and not (web["nginx"] and web["tls"] == "letsencrypt"):
        yield ("web", "acme_server"), ("an ACME directory is used only with tls: letsencrypt (and nginx); "
                                       "set web.tls: letsencrypt, or remove web.acme_server")
    if web["nginx"] and web["tls"] == "letsencrypt":
        if not (web.get("domain") or ctx.cfg["host"].get("domain")):
            yield ("web", "tls"), ("letsencrypt needs a domain name; set web.domain (or host.domain) to a name "
                                   "whose DNS points at the server")
        if not web.get("email"):
            yield ("web", "tls"), "letsencrypt needs a contact address; set web.email"


def firewall_rules(ctx: Context):
    for i, rule in enumerate(ctx.cfg["firewall"]["allow"]):
        problem = ufw_rule_problem(rule)
        if problem:
            yield ("firewall", "allow", i), problem


def fits_memory(ctx: Context):
    if ctx.cfg["search"]["elasticsearch"] and ctx.memory_mib < ELASTICSEARCH_MIN_MIB:
        yield ("search", "elasticsearch"), (f"Elasticsearch needs more than 2 GiB of memory and target "
                                            f"'{ctx.target.name}' has {ctx.memory_mib} MiB; "
                                            "turn search off, or pass --memory 4G if the machine is bigger")


def wifi_joins(ctx: Context):
    wifi = ctx.cfg["network"].get("wifi")
    if not wifi:
        return
    ssid_bytes = len(wifi["ssid"].encode("utf-8"))
    if ssid_bytes > 32:
        yield ("network", "wifi", "ssid"), f"an SSID is at most 32 bytes; this one is {ssid_bytes} bytes in UTF-8"
    if not wifi.get("country"):
        yield ("network", "wifi"), ("Wi-Fi needs a country (regulatory domain), e.g. country: GB; without it the "
                                    "radio stays off on a Raspberry Pi")


RULES: tuple[Callable[[Context], object], ...] = (
    admin_can_log_in, sections_need_app, app_runs_unprivileged, repository_is_authenticated, app_environment,
    app_paths_stay_inside,
    mysql_collation, tls_has_what_it_needs, firewall_rules, fits_memory, wifi_joins,
)


# Helpers the resolver shares, so a checked path and a resolved one are the same.

def _normal(checkout: str, rel: str) -> str:
    return posixpath.normpath(posixpath.join(checkout, rel))


def static_dir(checkout: str, static: str) -> Optional[str]:
    """The static folder on the server, or None when it is not a folder
    inside the checkout (the checkout itself would serve its .env and .git)."""
    path = _normal(checkout, static)
    return path if path.startswith(checkout + "/") else None


def sqlite_path(app: str, rel: str) -> Optional[str]:
    """The SQLite file on the server (``rel`` is relative to the app's data
    folder in /var/lib), or None when it is outside that folder: the app can
    write nowhere else, and the update command makes the file's folder the
    app's."""
    data = layout.app_state_dir(app)
    path = _normal(data, rel)
    return path if path.startswith(data + "/") else None


def ufw_rule_problem(value) -> Optional[str]:
    """What is wrong with one firewall.allow entry, or None: a port (both
    protocols, as `ufw allow 8080`), PORT/PROTO, or LOW:HIGH/PROTO."""
    text = str(value)
    match = re.fullmatch(r"([0-9]{1,5})(?::([0-9]{1,5}))?(?:/(tcp|udp))?", text)
    if not match:
        return f"expected a port, PORT/tcp, PORT/udp or LOW:HIGH/tcp, got {text!r}"
    low, high, proto = match.group(1), match.group(2), match.group(3)
    for port in filter(None, (low, high)):
        if not 1 <= int(port) <= 65535:
            return f"port {port} is out of range: ports are 1 to 65535"
    if high is not None:
        if int(low) >= int(high):
            return f"the range {low}:{high} must go from the lower port to the higher one"
        if proto is None:
            return f"a port range needs a protocol, e.g. {low}:{high}/tcp (ufw refuses it otherwise)"
    return None
