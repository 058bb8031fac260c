"""Resolving a checked config into a plan: the config with its defaults
filled in (defaults.py), the cross-field rules passed (checks.py), the keys
and certificates it names read, and the secrets drawn from the store. One
small function per section. Steps read only the plan, never the config."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from . import checks, layout
from . import keys as sshkeys
from .defaults import fill
from .errors import ConfigError, Problem, UsageError
from .fsutil import TooLarge, read_small
from .loader import Document
from .secrets_store import SecretStore
from .targets import Target


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
    repo_over_ssh: bool  # cloned with the app user's own deploy key
    ref: str
    commit: Optional[str]  # the full commit id ref must resolve to, or None
    user: str  # owns the code and venv; runs git, pip and the setup commands
    user_is_admin: bool
    home: str
    run_user: str  # runs gunicorn and the migrations: reads the code, writes only data_dir
    data_dir: str  # /var/lib/<app>, run_user's home
    base: str  # releases/, current, previous, repo.git
    dir: str  # the checkout that serves: base/current, a link to a release
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
    health: str = "/"  # the path the update command probes through gunicorn
    health_timeout: int = 60  # seconds for it to answer 2xx or 3xx


@dataclass
class Web:
    nginx: bool
    server_name: str
    tls: str  # self-signed | letsencrypt | none
    email: Optional[str]
    acme_server: str  # the ACME directory URL certbot uses
    cert_days: int
    cert_key: str  # ecdsa | rsa
    cert_bits: int  # with rsa
    cert_file: str
    key_file: str
    # The site's name is the host's own (host.hostname + host.domain), so it
    # differs per server and cannot be baked into an image.
    name_from_host: bool = False


@dataclass
class Mail:
    enabled: bool
    domain: str
    dkim_selector: str  # of the key the server makes (the config's, else the host name, else "mail")
    dkim_public_key: Optional[str]  # a key the config names, for `bakery dns` without --from
    dmarc_reports: str  # where DMARC aggregate reports go (rua)

    @property
    def dkim(self) -> bool:
        """The server signs its mail: only a DNS domain can publish the key."""
        return self.enabled and "." in self.domain


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
    hardening: bool  # kernel and login hardening (steps/hardening.py)
    password_authentication: bool
    permit_root_login: bool
    ssh_forwarding: bool
    firewall: bool
    app_metadata: bool  # the app user may reach the metadata service too
    open_ports: list  # ufw rule arguments such as "22/tcp"
    limited_ports: list  # those of open_ports that ufw rate-limits (`ufw limit`)
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
    # Names of the secrets first boot makes on the server (secrets: server);
    # the rendered files carry server_secret_placeholder(name) for each.
    server_secrets: list = field(default_factory=list)

    @property
    def shared(self) -> bool:
        """The render includes what is the same on every server (baked into images)."""
        return self.stage in ("full", "image")

    @property
    def per_server(self) -> bool:
        """The render includes what must differ per server (host name, secrets)."""
        return self.stage in ("full", "instance")


def default_workers(memory_mib: int, cpus: int) -> int:
    """gunicorn's 2*CPU+1, capped so that workers (~100 MiB each) leave room
    for the database and the system on small machines."""
    by_cpu = 2 * cpus + 1
    by_memory = max(1, (memory_mib - 384) // 160)
    return max(1, min(by_cpu, by_memory))


def wpa_psk(ssid: str, passphrase: str) -> str:
    """The WPA2 pre-shared key wpa_passphrase derives (PBKDF2-HMAC-SHA1, 4096 rounds)."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def resolve(doc: Document, target: Target, secrets: SecretStore, memory_mib: Optional[int] = None,
            home: Optional[Path] = None, stage: str = "full", hostname: Optional[str] = None) -> Plan:
    """Build the plan for ``target`` and ``stage``; raise ConfigError listing
    every problem. ``hostname`` (from --hostname, checked by the command
    line) overrides host.hostname."""
    memory = memory_mib or target.memory_mib
    cfg = fill(doc.data, target)
    problems: list[Problem] = checks.problems(doc, cfg, target, memory)
    notes: list[str] = []
    admin = _admin(doc, cfg, home, problems, notes)
    host = cfg["host"]
    server_secrets: list[str] = []
    hostname, secret = _server_identity(stage, hostname, host.get("hostname"), secrets,
                                        server_secrets if cfg["secrets"] == "server" else None)
    fqdn = f"{hostname}.{host['domain']}" if hostname and "domain" in host else None
    app = database = web = None
    if "app" in cfg:
        database = _database(cfg, secret)
        app = _app(cfg, target, memory, database, secret)
        web = _web(cfg, fqdn)
    ca_certs = _ca_certs(doc, cfg, problems)
    mail = _mail(doc, cfg, hostname, fqdn, problems)
    if problems:
        raise ConfigError(problems)
    ssh, network = cfg["ssh"], cfg["network"]
    return Plan(
        target=target, memory_mib=memory, cpus=target.cpus, admin=admin,
        hostname=hostname, fqdn=fqdn, domain=host.get("domain"),
        timezone=host.get("timezone"), locale=host.get("locale"), keyboard=host.get("keyboard"),
        hardening=host["hardening"],
        password_authentication=ssh["password_authentication"], permit_root_login=ssh["permit_root_login"],
        ssh_forwarding=ssh["forwarding"], firewall=cfg["firewall"]["enabled"],
        app_metadata=cfg["firewall"]["app_metadata"], open_ports=_open_ports(cfg, app),
        limited_ports=["22/tcp"] if cfg["firewall"]["ssh_rate_limit"] else [],
        extra_packages=list(cfg["packages"]), swap_size=_swap_size(cfg["swap"], memory),
        apt_proxy=network.get("apt_proxy"), retry_seconds=60 * network["retry_minutes"],
        pip_index_url=network.get("pip_index_url"), ca_certs=ca_certs, wifi=_wifi(network.get("wifi")),
        database=database, app=app, web=web, mail=mail, elasticsearch=cfg["search"]["elasticsearch"],
        notes=notes, stage=stage, server_secrets=server_secrets,
    )


def _database(cfg: dict, secret) -> Database:
    section, name = cfg["database"], cfg["app"]["name"]
    engine, user, db_name, charset = section["engine"], section["user"], section["name"], section["charset"]
    password = secret(f"{name}.database_password") if engine in ("mysql", "postgresql") else ""
    path = checks.sqlite_path(name, section["path"]) if engine == "sqlite" else None
    url = {
        "sqlite": f"sqlite:///{path}",
        "mysql": f"mysql+pymysql://{user}:{quote(password, safe='')}@localhost:3306/{db_name}?charset={charset}",
        "postgresql": f"postgresql://{user}:{quote(password, safe='')}@localhost:5432/{db_name}",
    }.get(engine, "")
    return Database(engine=engine, name=db_name, user=user, password=password, charset=charset,
                    collation=section["collation"], path=path, url=url)


def _app(cfg: dict, target: Target, memory: int, database: Database, secret) -> App:
    section, nginx = cfg["app"], cfg["web"]["nginx"]
    name, user = section["name"], section["user"]
    checkout = layout.app_dir(user, name)
    # int(): YAML's 2.0 is a number the schema takes as an integer; gunicorn does not.
    workers = int(section.get("workers") or default_workers(memory, target.cpus))
    port = section["port"]
    return App(
        name=name, repo=section["repo"], repo_over_ssh=checks.repository_over_ssh(section["repo"]), ref=section["ref"],
        commit=section.get("commit"), user=user, user_is_admin=user == cfg["admin"]["name"],
        home=layout.home(user), run_user=layout.run_user(name), data_dir=layout.app_state_dir(name),
        base=layout.app_base(user, name), dir=checkout, venv=layout.venv(checkout), module=section["module"],
        requirements=section["requirements"], pip_packages=_pip_packages(section["pip_packages"], database),
        environment={k: _text(v) for k, v in section["environment"].items()},
        dotenv=_dotenv(cfg, database, secret), setup=list(section["setup"]), migrate=list(section["migrate"]),
        static_dir=checks.static_dir(checkout, section["static"]) if "static" in section else None,
        static_url=section["static_url"].rstrip("/") or "/static",
        port=port, bind=f"127.0.0.1:{port}" if nginx else f"0.0.0.0:{port}", workers=workers,
        health=section["health"], health_timeout=section["health_timeout"],
    )


def _pip_packages(configured: list, database: Database) -> list:
    """The venv's packages besides the requirements: what bakery's own
    settings need first, then the config's."""
    needed = ["gunicorn"]
    if database.engine == "mysql":
        # DATABASE_URL names PyMySQL; MySQL 8 (Ubuntu's) logs it in with
        # caching_sha2_password, which PyMySQL can do only with cryptography.
        needed += ["pymysql", "cryptography"]
    packages = list(configured)
    for position, package in enumerate(needed):
        if not any(_pip_name(p) == package for p in packages):
            packages.insert(position, package)
    return packages


def _dotenv(cfg: dict, database: Database, secret) -> dict:
    """The app's .env: bakery's values first, then the config's."""
    dotenv = {"SECRET_KEY": secret(f"{cfg['app']['name']}.secret_key")}
    if database.engine != "none":
        dotenv["DATABASE_URL"] = database.url
    if cfg["mail"]["enabled"]:
        dotenv.update({"MAIL_SERVER": "localhost", "MAIL_PORT": "25"})
    if cfg["search"]["elasticsearch"]:
        dotenv["ELASTICSEARCH_URL"] = "http://localhost:9200"
    dotenv.update({key: _text(value) for key, value in cfg["app"]["dotenv"].items()})
    return dotenv


def _web(cfg: dict, fqdn: Optional[str]) -> Web:
    section, name = cfg["web"], cfg["app"]["name"]
    nginx = section["nginx"]
    cert_file, key_file = layout.certificate(name)
    return Web(nginx=nginx, server_name=section.get("domain") or fqdn or cfg["host"].get("domain") or "_",
               tls=section["tls"] if nginx else "none", email=section.get("email"), acme_server=section["acme_server"],
               cert_days=section["cert_days"], cert_key=section["cert_key"], cert_bits=section["cert_bits"],
               cert_file=cert_file,
               key_file=key_file, name_from_host="domain" not in section and "domain" in cfg["host"])


def _open_ports(cfg: dict, app: Optional[App]) -> list:
    """ufw's rules: SSH, what serves the app, then firewall.allow."""
    ports = ["22/tcp"]
    if app and not cfg["web"]["nginx"]:
        ports.append(f"{app.port}/tcp")
    else:
        ports += ["80/tcp", "443/tcp"]
    for rule in cfg["firewall"]["allow"]:
        if str(rule) not in ports:
            ports.append(str(rule))
    return ports


def _swap_size(swap, memory: int) -> Optional[str]:
    if swap == "auto":
        return "1G" if memory <= 1024 else None
    return None if swap is False else swap


PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.S)


def _ca_certs(doc: Document, cfg: dict, problems: list) -> list:
    """The PEM texts of network.ca_certs, read from their files: one per
    certificate, each parsed."""
    from cryptography import x509  # only for configs that name CAs: a heavy import

    pems = []
    for i, item in enumerate(cfg["network"]["ca_certs"]):
        where = ("network", "ca_certs", i)
        path = sshkeys.resolve_key_path(item, doc.base_dir)
        try:
            pem = read_small(path).decode("ascii")
        except (OSError, UnicodeDecodeError, TooLarge) as exc:
            reason = getattr(exc, "strerror", None) or ("not ASCII text" if isinstance(exc, UnicodeDecodeError) else exc)
            problems.append(doc.problem(where, f"cannot read CA certificate {sshkeys.shown(path)}: {reason}"))
            continue
        blocks = PEM_CERTIFICATE.findall(pem)
        if not blocks or "PRIVATE KEY" in pem:
            problems.append(doc.problem(where, f"{path} is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"))
            continue
        for n, block in enumerate(blocks, 1):
            try:
                x509.load_pem_x509_certificate(block.encode("ascii"))
            except ValueError as exc:
                which = f"certificate {n} of {len(blocks)} in {path}" if len(blocks) > 1 else str(path)
                problems.append(doc.problem(where, f"{which} does not parse as an X.509 certificate ({exc}); "
                                                   "export it again from its source as PEM"))
                continue
            # One certificate per file on the server: a chain file (root and
            # intermediate) gets a hash link for each of its certificates.
            pems.append(block + "\n")
    return pems


def _wifi(section: Optional[dict]) -> Optional[Wifi]:
    if not section:
        return None
    password = section.get("password")
    return Wifi(ssid=section["ssid"], psk=wpa_psk(section["ssid"], password) if password else None,
                country=section.get("country"), hidden=section["hidden"])


DEFAULT_DKIM_SELECTOR = "mail"  # when bakery knows no host name


def _mail(doc: Document, cfg: dict, hostname, fqdn, problems: list) -> Mail:
    section = cfg["mail"]
    domain = section.get("domain") or cfg["host"].get("domain") or fqdn or (hostname or "localhost")
    # Each server makes its own key: by default each also has its own
    # selector (its host name), so servers sending for one domain never
    # need the same DNS record.
    selector = section.get("dkim_selector") or hostname or DEFAULT_DKIM_SELECTOR
    return Mail(enabled=section["enabled"], domain=domain, dkim_selector=selector,
                dkim_public_key=_dkim_public_key(doc, section.get("dkim_public_key"), problems),
                dmarc_reports=section.get("dmarc_reports") or f"postmaster@{domain}")


def server_secret_placeholder(name: str) -> str:
    """What the rendered files carry where a secret born on the server goes:
    letters, digits and underscores only, so every quoting (.env, SQL, URL)
    leaves it as it is and first boot finds it again."""
    return f"BAKERY_SECRET__{name}__"


def _server_identity(stage: str, override: Optional[str], configured: Optional[str], secrets: SecretStore,
                     born_on_server: Optional[list]):
    """The host name for ``stage`` and how its secrets are looked up.

    The image stage has neither: whatever it holds is shared by every server
    started from the image, so it gets no host name and no secret (the values
    stay empty and no step of that stage writes them). With ``secrets:
    server`` (``born_on_server`` is a list) a secret is a placeholder, and its
    name is added to the list: first boot makes the value. With ``secrets:
    shared`` it comes from the store; a server named with --hostname, and
    every instance render, keeps its secrets under its own name there
    (``web1/app.secret_key``), so two servers never share them and rendering
    the same server again gives the same output. The command line has
    checked ``stage`` and ``override`` (stages.py)."""
    if stage == "image":
        return None, lambda key: ""
    hostname = override or configured
    if stage == "instance" and not hostname:
        raise UsageError("--stage instance needs the server's host name: pass --hostname NAME (e.g. --hostname web1), "
                         "one per server started from the image, or set host.hostname")
    if born_on_server is not None:
        def placeholder(key: str) -> str:
            name = re.sub(r"[^A-Za-z0-9_]", "_", key)
            if name not in born_on_server:
                born_on_server.append(name)
            return server_secret_placeholder(name)
        return hostname, placeholder
    if override is not None or stage == "instance":
        return hostname, lambda key: secrets.get(f"{hostname}/{key}")
    return hostname, secrets.get


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




def _admin(doc: Document, cfg: dict, home, problems: list, notes: list) -> Admin:
    section = cfg["admin"]
    keys, sources, before = [], [], len(problems)
    for i, item in enumerate(section["ssh_keys"]):
        try:
            if sshkeys.is_key_path(item):
                path = sshkeys.resolve_key_path(item, doc.base_dir)
                keys.append(sshkeys.read_key_file(path))
                sources.append(str(path))
            else:
                keys.append(sshkeys.check_public_key(item))
                sources.append("bakery.yaml")
        except sshkeys.KeyProblem as exc:
            problems.append(doc.problem(("admin", "ssh_keys", i), str(exc)))
    admin = Admin(name=section["name"], keys=keys, import_ids=list(section["ssh_import_id"]), shell=section["shell"],
                  key_source=", ".join(dict.fromkeys(sources)))
    if not keys and not admin.import_ids and len(problems) == before:
        _workstation_key(doc, admin, home, problems, notes)
    return admin


def _workstation_key(doc: Document, admin: Admin, home, problems: list, notes: list) -> None:
    """No key in the config: the workstation's own, as ssh-copy-id would."""
    default = sshkeys.default_workstation_key(home)
    if default is None:
        problems.append(doc.problem(("admin",),
            "no SSH public key: the admin could not log in (password login is off and the password is locked). "
            "Create a key with: ssh-keygen -t ed25519   (bakery then uses ~/.ssh/id_ed25519.pub), "
            "or list keys under admin.ssh_keys, or set admin.ssh_import_id (e.g. gh:yourname)"))
        return
    try:
        admin.keys.append(sshkeys.read_key_file(default))
    except sshkeys.KeyProblem as exc:
        problems.append(doc.problem(("admin", "ssh_keys"), str(exc)))
        return
    admin.key_source = str(default)
    notes.append(f"using SSH public key {default} for user {admin.name}")
