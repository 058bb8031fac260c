"""Where bakery puts things on the server. One place, so the resolver, the
step modules, the first-boot script and the update command agree on every
path."""

from __future__ import annotations

from types import SimpleNamespace

ETC_DIR = "/etc/bakery"  # root-only copies of files that carry secrets
LOG_DIR = "/var/log/bakery"
WEBROOT = "/var/www/letsencrypt"  # ACME http-01 challenges
LIB_DIR = "/usr/local/lib/bakery"
STATE_DIR = "/var/lib/cloud/instance/bakery"  # first boot's progress: status, done, failed
# Where the first bootcmd records that it unpacked this instance's files
# (16 KiB targets, cloudconfig.archive_files): in cloud-init's folder of the
# instance, beside the state folder, whose absence tells an instance's first boot.
UNPACKED_MARK = "/var/lib/cloud/instance/bakery-unpacked"
FIRST_BOOT_STATUS = f"{STATE_DIR}/status"  # "running N/T STEP", "ready" or "failed STEP"
FIRST_BOOT_LOG = f"{LOG_DIR}/first-boot.log"  # what first-boot.sh.j2 writes
UPDATE_LOG = f"{LOG_DIR}/update.log"  # what update.sh.j2 writes
CERT_DIR = "/etc/ssl/bakery"  # the self-signed certificate, made on the server
# Read by MySQL's and MariaDB's server alike (both packages' my.cnf include it).
MYSQL_CONF = "/etc/mysql/conf.d/bakery.cnf"
# When the database server starts at boot: a drop-in of Ubuntu's mysql.service,
# which is also the name Debian's mariadb.service answers to.
MYSQL_BOOT_ORDER = "/etc/systemd/system/mysql.service.d/10-bakery-boot-order.conf"
# MySQL's TLS key made before its server starts (mysql-tls-key.sh.j2), and the
# drop-in that runs it.
MYSQL_TLS_KEY_SCRIPT = f"{LIB_DIR}/mysql-tls-key.sh"
MYSQL_TLS_KEY_UNIT = "/etc/systemd/system/mysql.service.d/20-bakery-tls-key.conf"

# DKIM: the signing key is made on the server at first boot, in Debian's
# folder for opendkim's keys (opendkim's own, mode 0700). Fixed names, so
# `bakery dns --from` and the image clean-up find them whatever the selector.
DKIM_KEY_DIR = "/etc/dkimkeys"
DKIM_PRIVATE_KEY = f"{DKIM_KEY_DIR}/bakery.private"
# The public half as opendkim-genkey writes it: a zone-file TXT record that
# names the selector and the domain.
DKIM_PUBLIC_RECORD = f"{DKIM_KEY_DIR}/bakery.txt"
OPENDKIM_CONF = "/etc/opendkim.conf"
# Inside postfix's chroot (/var/spool/postfix on Debian and Ubuntu), where its
# smtpd and cleanup can reach it; postfix names it relative to that folder.
POSTFIX_QUEUE_DIR = "/var/spool/postfix"
OPENDKIM_SOCKET_DIR = "opendkim"
OPENDKIM_SOCKET = f"{OPENDKIM_SOCKET_DIR}/opendkim.sock"


def home(user: str) -> str:
    return f"/home/{user}"


def app_base(user: str, app: str) -> str:
    """The app's folder: its releases (one checkout and venv each), the
    ``current`` link to the one serving, ``previous``, and the git objects
    they share (``repo.git``)."""
    return f"{home(user)}/{app}"


def app_dir(user: str, app: str) -> str:
    """The checkout that serves: the ``current`` link, through which
    supervisor, gunicorn, nginx and the .env are reached."""
    return f"{app_base(user, app)}/current"


def venv(checkout: str) -> str:
    return f"{checkout}/venv"


def app_state_dir(app: str) -> str:
    """The app's data folder (its SQLite file, what it uploads): the only one
    the app itself may write, and the home of the user it runs as."""
    return f"/var/lib/{app}"


def run_user(app: str) -> str:
    """The user gunicorn and the migrations run as: not the code's owner, so
    the app cannot change its own code or venv. (User names: 32 characters.)"""
    return f"{app[:28]}-web"


def certificate(app: str) -> tuple[str, str]:
    """(certificate, private key) of the app's self-signed certificate."""
    return f"{CERT_DIR}/{app}.crt", f"{CERT_DIR}/{app}.key"


def update_command(app: str) -> str:
    return f"/usr/local/bin/{app}-update"


BACKUP_DIR = "/var/backups/bakery"  # the update command's database dumps, root-only


def update_status(app: str, log_dir: str = LOG_DIR) -> str:
    """The update command's state: "running N/T STAGE", "ready COMMIT" or
    "failed STAGE" (what ``bakery status --after-update`` reads)."""
    return f"{log_dir}/{app}-update.status"


def paths(plan, etc: str = ETC_DIR, log_dir: str = LOG_DIR, backups: str = BACKUP_DIR,
          supervisor: str = "/etc/supervisor", run: str = "/run") -> SimpleNamespace:
    """Server paths for ``plan``'s app. Tests pass other ``etc``/``log_dir``/
    ``backups``/``supervisor``/``run`` to run the rendered scripts inside a
    temporary root."""
    name = plan.app.name if plan.app else "app"
    return SimpleNamespace(
        etc=etc,
        log_dir=log_dir,
        webroot=WEBROOT,
        update=update_command(name),
        update_status=update_status(name, log_dir),
        backups=f"{backups}/{name}",
        app_state=app_state_dir(name),
        dotenv=f"{etc}/{name}.env",
        profile=f"{etc}/{name}.profile",
        db_sql=f"{etc}/{name}-db.sql",
        es_conf=f"{etc}/elasticsearch.yml",
        es_jvm_options=f"{etc}/elasticsearch-jvm.options",
        supervisor_conf=f"{supervisor}/conf.d/{name}.conf",
        # Written by supervisord when it starts, once it has read its configuration.
        supervisor_pid=f"{run}/supervisord.pid",
        supervisor_log_dir="/var/log/supervisor",
        nginx_site=f"/etc/nginx/sites-available/{name}",
        # Empty until a real certificate serves: then the HSTS header.
        nginx_hsts=f"/etc/nginx/snippets/bakery-{name}-hsts.conf",
        nginx_log_dir="/var/log/nginx",
        letsencrypt=f"{LIB_DIR}/{name}-letsencrypt.sh",
        letsencrypt_unit=f"bakery-letsencrypt-{name}",
    )
