#!/bin/sh
# Runs on the machine being baked, right after Packer connects.
# Waits until cloud-init has finished the whole first boot (packages, runcmd,
# first-boot script), then fails the build if cloud-init recorded any error, so a
# broken configuration never becomes an image.
# `cloud-init status --wait` is not enough: it returns as soon as one stage has
# failed while later stages may still be running.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -n sh "$0" "$@"
fi

timeout=3600
waited=0
while [ ! -f /var/lib/cloud/instance/boot-finished ]; do
    if [ "$waited" -ge "$timeout" ]; then
        echo "cloud-init did not finish within ${timeout}s" >&2
        cloud-init status --long >&2 || true
        tail -n 50 /var/log/cloud-init-output.log >&2 || true
        exit 1
    fi
    sleep 5
    waited=$((waited + 5))
done

status="$(cloud-init status --long 2>&1 || true)"
printf '%s\n' "$status"

# result.json lists every error of the last boot; cloud-init depends on python3.
errors="$(python3 - <<'PY'
import json
try:
    with open("/run/cloud-init/result.json") as fh:
        result = json.load(fh)
except FileNotFoundError:
    print("/run/cloud-init/result.json is missing")
else:
    for error in result.get("v1", {}).get("errors", []):
        print(error)
PY
)"

case "$status" in
    *"status: error"*) failed=yes ;;
    *) failed=no ;;
esac
if [ -n "$errors" ]; then
    failed=yes
fi
# bakery's own verdict on its first-boot steps, when the image has them.
bakery_status=/var/lib/cloud/instance/bakery/status
if [ -e "$bakery_status" ] && [ "$(cat "$bakery_status")" != ready ]; then
    errors="${errors}bakery first boot: $(cat "$bakery_status")"
    failed=yes
fi

if [ "$failed" = yes ]; then
    echo "cloud-init reported errors; not building an image from this machine:" >&2
    printf '%s\n' "$errors" >&2
    tail -n 50 /var/log/cloud-init-output.log >&2 || true
    exit 1
fi
echo "cloud-init finished without errors"
