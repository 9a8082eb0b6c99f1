#!/usr/bin/env bash
# cron-run.sh NAME [CRON_FILE]: runs the entry "#Ansible: NAME" of the cron file (default
# /etc/cron.d/pgdr) now, the way cron runs it: as the entry's user, through /bin/sh -c, with
# cron's environment only (SHELL, HOME, LOGNAME, PATH=/usr/bin:/bin, plus the file's own
# VAR=value lines). Prints the lines the job added to its log file (the wrapper's), then
# "rc=N", and exits 0: the caller judges.
set -euo pipefail
name=$1
file=${2:-/etc/cron.d/pgdr}
log=${PGDR_CRON_LOG:-/var/log/pgdr/backup.log}

entry=$(awk -v want="#Ansible: $name" 'found { print; exit } $0 == want { found = 1 }' "$file")
[ -n "$entry" ] || { echo "no entry named '$name' in $file" >&2; exit 2; }
read -r -a fields <<< "$entry"
if [[ ${fields[0]} == @* ]]; then
    user=${fields[1]}; command=${entry#*"$user" }
else
    user=${fields[5]}; command=$(cut -d' ' -f7- <<< "$entry")
fi
home=$(getent passwd "$user" | cut -d: -f6)
mapfile -t file_env < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$file" || true)

before=$(stat -c %s "$log" 2>/dev/null || echo 0)
rc=0
runuser -u "$user" -- env -i SHELL=/bin/sh HOME="$home" LOGNAME="$user" PATH=/usr/bin:/bin \
    "${file_env[@]}" /bin/sh -c "$command" || rc=$?
tail -c +"$((before + 1))" "$log" 2>/dev/null || true
echo "rc=$rc"
