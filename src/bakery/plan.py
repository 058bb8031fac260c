"""Resolving a validated config into a plan: every default filled in from the
target preset, distro facts and the secrets store, and every cross-field
rule checked. Steps read only the plan, never the raw config."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from . import keys as sshkeys
from .errors import ConfigError, Problem, UsageError
from .fsutil import TooLarge, read_small
from .loader import Document
from .secrets_store import SecretStore
from .stages import STAGES
from .targets import Target

# Variables the login shell or bakery's scripts own; exporting them from
# ~/.profile would break logins or the app commands.
RESERVED_ENVIRONMENT = frozenset({"_", "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "IFS",
                                  "PS1", "PS2", "PS4", "ENV", "BASH_ENV", "LD_PRELOAD", "LD_LIBRARY_PATH",
                                  "VIRTUAL_ENV", "PYTHONHOME"})
ELASTICSEARCH_MIN_MIB = 2048  # the tutorial's rule: Elasticsearch needs more than 2 GB

HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass
class Admin:
    name: str
    keys: list
    import_ids: list
    shell: str
    key_source: str  # where the keys came from, for the stderr note


@dataclass
class Wifi:
    ssid: str
    psk: Optional[str]  # 64 hex digits derived from the passphrase, or None (open network)
    country: Optional[str]
    hidden: bool


@dataclass
class Database:
    engine: str  # mysql | postgresql | sqlite | none
    name: str
    user: str
    password: str
    charset: str
    collation: str
    path: Optional[str]  # sqlite file, absolute
    url: str


@dataclass
class App:
    name: str
    repo: str
    ref: str
    user: str
    user_is_admin: bool
    home: str
    dir: str  # checkout
    venv: str
    module: str
    requirements: str
    pip_packages: list
    environment: dict  # exported in ~/.profile
    dotenv: dict  # the full .env, bakery's values first
    setup: list
    migrate: list
    static_dir: Optional[str]  # absolute path on the server
    static_url: str
    port: int
    bind: str  # gunicorn --bind
    workers: int


@dataclass
class Web:
    nginx: bool
    server_name: str
    tls: str  # self-signed | letsencrypt | none
    email: Optional[str]
    cert_days: int
    cert_bits: int
    cert_file: str
    key_file: str
    # The site's name is the host's own (host.hostname + host.domain), so it
    # differs per server and cannot be baked into an image.
    name_from_host: bool = False


@dataclass
class Mail:
    enabled: bool
    domain: str
    dkim_selector: Optional[str]
    dkim_public_key: Optional[str]


@dataclass
class Plan:
    target: Target
    memory_mib: int
    cpus: int
    admin: Admin
    hostname: Optional[str]
    fqdn: Optional[str]
    domain: Optional[str]
    timezone: Optional[str]
    locale: Optional[str]
    keyboard: Optional[str]
    password_authentication: bool
    permit_root_login: bool
    ssh_forwarding: bool
    firewall: bool
    open_ports: list  # ufw rule arguments such as "22/tcp"
    extra_packages: list
    swap_size: Optional[str]  # e.g. "1G", or None
    apt_proxy: Optional[str]
    retry_seconds: int  # how long network steps retry before they fail
    pip_index_url: Optional[str]
    ca_certs: list  # PEM texts
    wifi: Optional[Wifi]
    database: Optional[Database]
    app: Optional[App]
    web: Optional[Web]
    mail: Mail
    elasticsearch: bool
    notes: list = field(default_factory=list)  # said on stderr, never in the artifact
    stage: str = "full"

    @property
    def shared(self) -> bool:
        """The render includes what is the same on every server (baked into images)."""
        return self.stage in ("full", "image")

    @property
    def per_server(self) -> bool:
        """The render includes what must differ per server (host name, secrets)."""
        return self.stage in ("full", "instance")


def _get(data: dict, *path, default=None):
    node = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def default_workers(memory_mib: int, cpus: int) -> int:
    """gunicorn's 2*CPU+1, capped so that workers (~100 MiB each) leave room
    for the database and the system on small machines."""
    by_cpu = 2 * cpus + 1
    by_memory = max(1, (memory_mib - 384) // 160)
    return max(1, min(by_cpu, by_memory))


def wpa_psk(ssid: str, passphrase: str) -> str:
    """The WPA2 pre-shared key wpa_passphrase derives (PBKDF2-HMAC-SHA1, 4096 rounds)."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def _repo_name(url: str) -> str:
    name = re.split(r"[/:]", url.rstrip("/"))[-1]
    name = re.sub(r"\.git$", "", name).lower()
    name = re.sub(r"[^a-z0-9_-]", "-", name).strip("-_") or "app"
    return name if name[0].isalpha() else "app-" + name


def resolve(doc: Document, target: Target, secrets: SecretStore, memory_mib: Optional[int] = None,
            home: Optional[Path] = None, stage: str = "full", hostname: Optional[str] = None) -> Plan:
    """Build the plan for ``target`` and ``stage``; raise ConfigError listing
    every problem. ``hostname`` (from --hostname) overrides host.hostname."""
    data = doc.data
    problems: list[Problem] = []
    notes: list[str] = []
    memory = memory_mib or target.memory_mib

    admin = _resolve_admin(doc, target, home, problems, notes)

    password_auth = bool(_get(data, "ssh", "password_authentication", default=False))
    domain = _get(data, "host", "domain")
    hostname, secret = _server_identity(stage, hostname, _get(data, "host", "hostname"), secrets)
    fqdn = f"{hostname}.{domain}" if hostname and domain else None

    app = None
    database = None
    web = None
    app_data = _get(data, "app")
    nginx_default = target.nginx
    nginx = bool(_get(data, "web", "nginx", default=nginx_default))
    if app_data is not None:
        name = app_data.get("name") or _repo_name(app_data["repo"])
        app_user = app_data.get("user") or admin.name
        if app_user == "root":
            problems.append(doc.problem(("app", "user"), "the app must not run as root; leave app.user out to use the admin user, or name an unprivileged user"))
        home_dir = f"/home/{app_user}"
        app_dir = f"{home_dir}/{name}"
        database = _resolve_database(doc, target, name, app_dir, secret, problems)
        # int(): YAML's 2.0 is a number the schema takes as an integer; gunicorn does not.
        workers = int(app_data.get("workers") or target.workers or default_workers(memory, target.cpus))
        port = int(app_data.get("port", 8000))
        static = app_data.get("static")
        dotenv = {"SECRET_KEY": secret(f"{name}.secret_key")}
        if database and database.engine != "none":
            dotenv["DATABASE_URL"] = database.url
        mail_on = bool(_get(data, "mail", "enabled", default=True))
        if mail_on:
            dotenv.update({"MAIL_SERVER": "localhost", "MAIL_PORT": "25"})
        if _get(data, "search", "elasticsearch", default=False):
            dotenv["ELASTICSEARCH_URL"] = "http://localhost:9200"
        for key, value in (app_data.get("dotenv") or {}).items():
            dotenv[key] = _text(value)
            # python-dotenv cannot read a quoted value that spans lines or ends in a backslash.
            if re.search(r"[\r\n\x00]|\\$", dotenv[key]):
                problems.append(doc.problem(("app", "dotenv", key), "a .env value cannot contain a line break or end with a backslash"))
        for key in app_data.get("environment") or {}:
            if key in RESERVED_ENVIRONMENT:
                problems.append(doc.problem(("app", "environment", key), f"{key} is set by the login shell or bakery's scripts and cannot be overridden here"))
        app = App(
            name=name, repo=app_data["repo"], ref=app_data.get("ref", "main"), user=app_user,
            user_is_admin=app_user == admin.name, home=home_dir, dir=app_dir, venv=f"{app_dir}/venv",
            module=app_data.get("module") or f"{name.replace('-', '_')}:app",
            requirements=app_data.get("requirements", "requirements.txt"),
            pip_packages=list(app_data.get("pip_packages") or ["gunicorn"]),
            environment={k: _text(v) for k, v in (app_data.get("environment") or {}).items()},
            dotenv=dotenv, setup=list(app_data.get("setup") or []), migrate=list(app_data.get("migrate") or []),
            static_dir=_static_dir(doc, app_dir, static, problems) if static else None,
            static_url=app_data.get("static_url", "/static").rstrip("/") or "/static",
            port=port, bind=f"127.0.0.1:{port}" if nginx else f"0.0.0.0:{port}", workers=workers,
        )
        needed = ["gunicorn"]
        if database and database.engine == "mysql":
            # DATABASE_URL names PyMySQL; MySQL 8 (Ubuntu's) logs it in with
            # caching_sha2_password, which PyMySQL can do only with cryptography.
            needed += ["pymysql", "cryptography"]
        for position, package in enumerate(needed):
            if not any(_pip_name(p) == package for p in app.pip_packages):
                app.pip_packages.insert(position, package)
        tls = _get(data, "web", "tls", default="self-signed")
        if not nginx and _get(data, "web", "tls") not in (None, "none"):
            problems.append(doc.problem(("web", "tls"), f"tls: {tls} needs nginx, and web.nginx is false: gunicorn "
                                        "would serve plain HTTP on every address; turn nginx on, or set tls: none"))
        server_name = _get(data, "web", "domain") or fqdn or domain
        email = _get(data, "web", "email")
        if nginx and tls == "letsencrypt":
            if not server_name:
                problems.append(doc.problem(("web", "tls"), "letsencrypt needs a domain name; set web.domain (or host.domain) to a name whose DNS points at the server"))
            if not email:
                problems.append(doc.problem(("web", "tls"), "letsencrypt needs a contact address; set web.email"))
        web = Web(nginx=nginx, server_name=server_name or "_", tls=tls if nginx else "none", email=email,
                  cert_days=int(_get(data, "web", "cert_days", default=365)), cert_bits=int(_get(data, "web", "cert_bits", default=4096)),
                  cert_file=f"/etc/ssl/bakery/{name}.crt", key_file=f"/etc/ssl/bakery/{name}.key",
                  name_from_host=not _get(data, "web", "domain") and bool(domain))
    elif _get(data, "database") or _get(data, "web"):
        section = "database" if _get(data, "database") else "web"
        problems.append(doc.problem((section,), f"the {section} section needs an app section (with at least app.repo)"))

    firewall = bool(_get(data, "firewall", "enabled", default=True))
    ports = ["22/tcp"]
    if app and nginx:
        ports += ["80/tcp", "443/tcp"]
    elif app:
        ports.append(f"{app.port}/tcp")
    else:
        ports += ["80/tcp", "443/tcp"]
    for i, rule in enumerate(_get(data, "firewall", "allow", default=[]) or []):
        rule, problem = _ufw_rule(rule)
        if problem:
            problems.append(doc.problem(("firewall", "allow", i), problem))
        elif rule not in ports:
            ports.append(rule)
    if _get(data, "search", "elasticsearch", default=False) and memory < ELASTICSEARCH_MIN_MIB:
        problems.append(doc.problem(("search", "elasticsearch"),
                        f"Elasticsearch needs more than 2 GiB of memory and target '{target.name}' has {memory} MiB; "
                        "turn search off, or pass --memory 4G if the machine is bigger"))

    swap_conf = _get(data, "swap", default="auto")
    if swap_conf is False:
        swap_size = None
    elif swap_conf == "auto":
        swap_size = "1G" if memory <= 1024 else None
    else:
        swap_size = swap_conf

    ca_certs = []
    for i, item in enumerate(_get(data, "network", "ca_certs", default=[]) or []):
        path = sshkeys.resolve_key_path(item, doc.base_dir)
        try:
            pem = read_small(path).decode("ascii")
        except (OSError, UnicodeDecodeError, TooLarge) as exc:
            reason = getattr(exc, "strerror", None) or ("not ASCII text" if isinstance(exc, UnicodeDecodeError) else exc)
            problems.append(doc.problem(("network", "ca_certs", i), f"cannot read CA certificate {sshkeys.shown(path)}: {reason}"))
            continue
        if "-----BEGIN CERTIFICATE-----" not in pem or "PRIVATE KEY" in pem:
            problems.append(doc.problem(("network", "ca_certs", i), f"{path} is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"))
            continue
        ca_certs.append(pem.strip() + "\n")

    wifi = None
    wifi_data = _get(data, "network", "wifi")
    if wifi_data:
        password = wifi_data.get("password")
        wifi = Wifi(ssid=wifi_data["ssid"], psk=wpa_psk(wifi_data["ssid"], password) if password else None,
                    country=wifi_data.get("country"), hidden=bool(wifi_data.get("hidden", False)))
        ssid_bytes = len(wifi.ssid.encode("utf-8"))
        if ssid_bytes > 32:
            problems.append(doc.problem(("network", "wifi", "ssid"), f"an SSID is at most 32 bytes; this one is "
                                        f"{ssid_bytes} bytes in UTF-8"))
        if not wifi.country:
            problems.append(doc.problem(("network", "wifi"), "Wi-Fi needs a country (regulatory domain), e.g. country: GB; without it the radio stays off on a Raspberry Pi"))

    mail_domain = _get(data, "mail", "domain") or domain or fqdn or (hostname or "localhost")
    dkim_key = _dkim_public_key(doc, _get(data, "mail", "dkim_public_key"), problems)
    mail = Mail(enabled=bool(_get(data, "mail", "enabled", default=True)), domain=mail_domain,
                dkim_selector=_get(data, "mail", "dkim_selector"), dkim_public_key=dkim_key)

    extra_packages = list(_get(data, "packages", default=[]) or [])
    for i, package in enumerate(extra_packages):
        if package.endswith("-"):
            problems.append(doc.problem(("packages", i), f"a trailing '-' makes apt remove {package[:-1]}; "
                                        "bakery only installs packages: remove the '-'"))

    if problems:
        raise ConfigError(problems)
    return Plan(
        target=target, memory_mib=memory, cpus=target.cpus, admin=admin,
        hostname=hostname, fqdn=fqdn, domain=domain,
        timezone=_get(data, "host", "timezone"), locale=_get(data, "host", "locale"), keyboard=_get(data, "host", "keyboard"),
        password_authentication=password_auth, permit_root_login=bool(_get(data, "ssh", "permit_root_login", default=False)),
        ssh_forwarding=bool(_get(data, "ssh", "forwarding", default=False)),
        firewall=firewall, open_ports=ports, extra_packages=extra_packages,
        swap_size=swap_size, apt_proxy=_get(data, "network", "apt_proxy"),
        retry_seconds=60 * int(_get(data, "network", "retry_minutes", default=15)), pip_index_url=_get(data, "network", "pip_index_url"),
        ca_certs=ca_certs, wifi=wifi, database=database, app=app, web=web, mail=mail,
        elasticsearch=bool(_get(data, "search", "elasticsearch", default=False)), notes=notes, stage=stage,
    )


def _server_identity(stage: str, override: Optional[str], configured: Optional[str], secrets: SecretStore):
    """The host name for ``stage`` and how its secrets are looked up.

    The image stage has neither: whatever it holds is shared by every server
    started from the image, so it gets no host name and no secret (the values
    stay empty and no step of that stage writes them). A server named with
    --hostname, and every instance render, keeps its secrets under its own
    name in the store (``web1/app.secret_key``), so two servers never share
    them and rendering the same server again gives the same output."""
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    if override is not None and not HOSTNAME.fullmatch(override):
        raise UsageError(f"--hostname {override!r} is not a host name: use letters, digits and hyphens "
                         "(at most 63), not starting or ending with a hyphen, e.g. web1")
    if stage == "image":
        if override is not None:
            raise UsageError("--hostname names one server, and the image stage is the same for every server: "
                             "use it with --stage instance")
        return None, lambda key: ""
    hostname = override or configured
    if stage == "instance" and not hostname:
        raise UsageError("--stage instance needs the server's host name: pass --hostname NAME (e.g. --hostname web1), "
                         "one per server started from the image, or set host.hostname")
    if override is not None or stage == "instance":
        return hostname, lambda key: secrets.get(f"{hostname}/{key}")
    return hostname, secrets.get


def _ufw_rule(value) -> tuple:
    """(ufw rule argument, problem) for one firewall.allow entry: a port
    (both protocols, as `ufw allow 8080`), PORT/PROTO, or LOW:HIGH/PROTO."""
    text = str(value)
    match = re.fullmatch(r"([0-9]{1,5})(?::([0-9]{1,5}))?(?:/(tcp|udp))?", text)
    if not match:
        return None, f"expected a port, PORT/tcp, PORT/udp or LOW:HIGH/tcp, got {text!r}"
    low, high, proto = match.group(1), match.group(2), match.group(3)
    for port in filter(None, (low, high)):
        if not 1 <= int(port) <= 65535:
            return None, f"port {port} is out of range: ports are 1 to 65535"
    if high is not None:
        if int(low) >= int(high):
            return None, f"the range {low}:{high} must go from the lower port to the higher one"
        if proto is None:
            return None, f"a port range needs a protocol, e.g. {low}:{high}/tcp (ufw refuses it otherwise)"
    return text, None


def _static_dir(doc, app_dir: str, static: str, problems: list) -> str:
    """The static folder nginx serves: inside the checkout, not the checkout
    itself (that would serve its .env and .git)."""
    path = posixpath.normpath(posixpath.join(app_dir, static))
    if not path.startswith(app_dir + "/"):
        problems.append(doc.problem(("app", "static"), f"the static folder must be a folder inside the app's checkout "
                                    f"({static!r} is {path}): e.g. app/static"))
    return path


def _pip_name(requirement: str) -> str:
    """The project name of a pip requirement such as ``PyMySQL[rsa]>=1.1``."""
    return re.split(r"[\[=<>!~;@ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pem_body(pem: str) -> str:
    lines = [ln.strip() for ln in pem.splitlines() if ln.strip() and not ln.startswith("-----")]
    if not lines or "PRIVATE" in pem:
        raise ValueError("not a PEM public key")
    return "".join(lines)


def _dkim_public_key(doc, value, problems: list):
    """The DKIM public key as the base64 of its DER, from the key itself or a
    PEM file; a private key is refused and never shown, whatever its form."""
    if not value:
        return None
    where = ("mail", "dkim_public_key")
    if sshkeys.looks_private(value):
        problems.append(doc.problem(where, "this is a PRIVATE key: give the public key; the private key stays on the mail server"))
        return None
    if re.fullmatch(r"[A-Za-z0-9+/=\s]+", value):
        body = "".join(value.split())
    else:
        path = sshkeys.resolve_key_path(value, doc.base_dir)
        try:
            pem = read_small(path, 64 * 1024).decode("ascii")
            if sshkeys.looks_private(pem):
                raise ValueError(f"{sshkeys.shown(path)} is a PRIVATE key file: give the public key")
            body = _pem_body(pem)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            problems.append(doc.problem(where, f"expected the base64 public key or a readable PEM public key file: {reason}"))
            return None
    problem = _der_public_key_problem(body)
    if problem:
        problems.append(doc.problem(where, problem))
        return None
    return body


def _der_public_key_problem(body: str):
    """None when ``body`` is the base64 of a DER public key; else what it is."""
    import base64
    import binascii

    from cryptography.hazmat.primitives.serialization import load_der_private_key, load_der_public_key

    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return "not base64 text: expected the public key's base64 (the lines between BEGIN and END PUBLIC KEY)"
    try:
        load_der_public_key(der)
        return None
    except (ValueError, TypeError):
        pass
    try:
        load_der_private_key(der, password=None)
        return "this is a PRIVATE key (its base64 body): give the public key; the private key stays on the mail server"
    except Exception:
        return "not a public key: expected the base64 between BEGIN and END PUBLIC KEY"


def _resolve_admin(doc: Document, target: Target, home, problems: list, notes: list) -> Admin:
    data = doc.data
    name = _get(data, "admin", "name") or target.admin_user
    import_ids = list(_get(data, "admin", "ssh_import_id", default=[]) or [])
    found = []
    sources = []
    for i, item in enumerate(_get(data, "admin", "ssh_keys", default=[]) or []):
        try:
            if sshkeys.is_key_path(item):
                path = sshkeys.resolve_key_path(item, doc.base_dir)
                found.append(sshkeys.read_key_file(path))
                sources.append(str(path))
            else:
                found.append(sshkeys.check_public_key(item))
                sources.append("bakery.yaml")
        except sshkeys.KeyProblem as exc:
            problems.append(doc.problem(("admin", "ssh_keys", i), str(exc)))
    source = ", ".join(dict.fromkeys(sources))
    if not found and not import_ids and not problems:
        default = sshkeys.default_workstation_key(home)
        if default is not None:
            try:
                found.append(sshkeys.read_key_file(default))
                source = str(default)
                notes.append(f"using SSH public key {default} for user {name}")
            except sshkeys.KeyProblem as exc:
                problems.append(doc.problem(("admin", "ssh_keys"), str(exc)))
        else:
            problems.append(doc.problem(("admin",),
                "no SSH public key: the admin could not log in (password login is off and the password is locked). "
                "Create a key with: ssh-keygen -t ed25519   (bakery then uses ~/.ssh/id_ed25519.pub), "
                "or list keys under admin.ssh_keys, or set admin.ssh_import_id (e.g. gh:yourname)"))
    shell = _get(data, "admin", "shell", default="/bin/bash")
    if name == "root":
        problems.append(doc.problem(("admin", "name"), "the admin is a new sudo user, and root stays locked out of SSH: "
                                    "choose another name, e.g. ubuntu"))
    if posixpath.basename(shell) in ("nologin", "false"):
        problems.append(doc.problem(("admin", "shell"), f"{shell} refuses every login, so the admin could not log in: "
                                    "use a shell such as /bin/bash"))
    return Admin(name=name, keys=found, import_ids=import_ids, shell=shell, key_source=source)


def _resolve_database(doc, target: Target, app_name: str, app_dir: str, secret, problems) -> Database:
    data = doc.data
    engine = _get(data, "database", "engine", default=target.database)
    ident = re.sub(r"[^A-Za-z0-9_]", "_", app_name)
    name = _get(data, "database", "name", default=ident[:64])
    # MySQL's user names are at most 32 characters (PostgreSQL's 63).
    user = _get(data, "database", "user", default=ident[:32])
    password = secret(f"{app_name}.database_password") if engine in ("mysql", "postgresql") else ""
    charset = _get(data, "database", "charset", default="utf8mb4")
    collation = _get(data, "database", "collation", default="utf8mb4_bin")
    if engine == "mysql" and not collation.startswith(charset + "_"):
        problems.append(doc.problem(("database", "collation"), f"collation '{collation}' does not belong to character set '{charset}' (expected {charset}_...)"))
    path = None
    if engine == "sqlite":
        rel = _get(data, "database", "path", default=f"{app_name}.db")
        path = posixpath.normpath(posixpath.join(app_dir, rel))
        # The update command makes the file's folder the app user's: it must
        # be the app's own (its checkout, or /var/lib/<app>), never / or /tmp.
        state_dir = f"/var/lib/{app_name}"
        if not (path.startswith(app_dir + "/") or path.startswith(state_dir + "/")):
            problems.append(doc.problem(("database", "path"), f"the SQLite file must be inside the app's folder "
                                        f"{app_dir} or in {state_dir}/ ({rel!r} is {path}): "
                                        f"use a path such as data/{app_name}.db"))
        url = f"sqlite:///{path}"
    elif engine == "mysql":
        url = f"mysql+pymysql://{user}:{quote(password, safe='')}@localhost:3306/{name}?charset={charset}"
    elif engine == "postgresql":
        url = f"postgresql://{user}:{quote(password, safe='')}@localhost:5432/{name}"
    else:
        url = ""
    return Database(engine=engine, name=name, user=user, password=password, charset=charset, collation=collation, path=path, url=url)
