#!/bin/sh
# Runs last on the machine being baked. Removes everything that must differ
# between servers started from the image, so that their first boot creates it
# afresh: cloud-init state (the next boot runs as a new instance, with its own
# user-data), SSH host keys, machine id, logs and shell history. The baked
# user-data itself goes with the cloud-init state. Each server then gets its
# host name and secrets from its own instance user-data
# (bakery render --stage instance --hostname NAME).
set -eu

if [ "$(id -u)" -ne 0 ]; then
    # sudo resets the environment: carry over the one variable this script reads.
    exec sudo -n env "PACKER_SSH_PUBLIC_KEY=${PACKER_SSH_PUBLIC_KEY:-}" sh "$0" "$@"
fi

cloud-init clean --logs

rm -f /etc/ssh/ssh_host_*
# Secrets are born on each server (secrets: server); an image never carries any.
rm -rf /etc/bakery/secrets
# So is the DKIM signing key: each server makes its own at its first boot.
rm -rf /etc/dkimkeys/bakery.private /etc/dkimkeys/bakery.txt /etc/dkimkeys/new.*

# Keys and ids the packages made when they were installed, which every server
# started from the image would otherwise share; each server makes its own:
# - ssl-cert's "snakeoil" key and certificate (the TLS of postfix and
#   PostgreSQL): made again by bakery's first boot before any service starts;
# - MySQL's server id and its TLS and RSA keys: made again when it starts
#   without them, its TLS key by bakery's drop-in just before (mysql-tls-key.sh),
#   the rest by MySQL itself (MariaDB has none of these);
# - systemd's random seed and its secret for encrypted credentials.
find /etc/ssl/certs -maxdepth 1 -type l -lname ssl-cert-snakeoil.pem -delete 2>/dev/null || true
rm -f /etc/ssl/private/ssl-cert-snakeoil.key /etc/ssl/certs/ssl-cert-snakeoil.pem
for file in auto.cnf ca.pem ca-key.pem server-cert.pem server-key.pem client-cert.pem client-key.pem \
        private_key.pem public_key.pem; do
    rm -f "/var/lib/mysql/$file"
done
rm -f /var/lib/systemd/random-seed /var/lib/systemd/credential.secret

# An empty machine-id (not a missing one) makes systemd generate a new id on the
# next boot without treating it as a first boot of an unprovisioned system.
truncate -s 0 /etc/machine-id
# Debian links dbus's id to /etc/machine-id; a copied file would keep the old id.
if [ -e /var/lib/dbus/machine-id ] || [ -L /var/lib/dbus/machine-id ]; then
    rm -f /var/lib/dbus/machine-id
    ln -s /etc/machine-id /var/lib/dbus/machine-id
fi

# Packer's temporary key must not open every server made from the image.
if [ -n "${PACKER_SSH_PUBLIC_KEY:-}" ]; then
    key_body="$(printf '%s\n' "$PACKER_SSH_PUBLIC_KEY" | awk '{print $2}')"
    for keys in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do
        if [ -f "$keys" ] && [ -n "$key_body" ]; then
            grep -vF -- "$key_body" "$keys" > "$keys.tmp" || true
            cat "$keys.tmp" > "$keys"
            rm -f "$keys.tmp"
        fi
    done
fi

if command -v journalctl > /dev/null 2>&1; then
    journalctl --rotate > /dev/null 2>&1 || true
    journalctl --vacuum-time=1s > /dev/null 2>&1 || true
fi
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
find /var/log -type f ! -path '/var/log/journal/*' -exec truncate -s 0 {} +

rm -f /root/.bash_history /home/*/.bash_history
rm -rf /tmp/* /var/tmp/*

sync
