#!/usr/bin/env bash
# The pgdr demo, end to end on this machine (root, Debian 12, after scripts/bootstrap.sh):
#   1. the lab (PostgreSQL 15 with sample data + SeaweedFS S3): python lab/lab.py up
#   2. .lab/inventory.yml (0600) from .lab/state.json
#   3. playbook pgdr.postgresql.setup   - the agent role installs the pgdr CLI on the node
#   4. playbook pgdr.postgresql.backup  - a full backup into the lab bucket
#   5. playbook pgdr.postgresql.restore - restore into .lab/restore/data on a free port, start
#   6. compare every table of every database between the lab primary and the restored copy
#   7. report: backup id, backup seconds, stored size, restore seconds (RTO), RPO now
# Exit status: 0 when the data match, 1 when they differ, other non-zero when a step failed.
# Re-runnable: the previous restored server is stopped and its directory replaced (restore
# with force, which pgdr refuses for the data directory of a running server).
#   scripts/demo.sh stop     stops the restored server(s) of earlier runs (make lab-down)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="$REPO/.venv/bin/python"
LAB="$REPO/.lab"
export ANSIBLE_CONFIG="$REPO/ansible.cfg"
export PATH="$REPO/.venv/bin:$PATH"

say() { printf '\n==> %s\n' "$*"; }
die() { echo "demo: ERROR: $*" >&2; exit 2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || die "run as root (the lab runs PostgreSQL through runuser -u postgres)"
[ -x "$PY" ] || die "no .venv: run scripts/bootstrap.sh (make setup) first"

if [ "${1:-}" = stop ]; then
    "$PY" scripts/demo_lab.py stop-restored
    exit 0
fi

t_start=$(now)
say "stopping the restored server of an earlier run, if any"
"$PY" scripts/demo_lab.py stop-restored

say "lab: PostgreSQL + SeaweedFS (python lab/lab.py up)"
"$PY" lab/lab.py up

scripts/link-collection.sh
inventory=$("$PY" scripts/demo_lab.py inventory)
work="$LAB/demo"
rm -rf "$work" && mkdir -p "$work" && chmod 700 "$work"

say "agent: ansible-playbook pgdr.postgresql.setup"
ansible-playbook -i "$inventory" pgdr.postgresql.setup

say "backup: ansible-playbook pgdr.postgresql.backup"
t0=$(now)
ansible-playbook -i "$inventory" pgdr.postgresql.backup -e backup_type=full
t_backup=$(elapsed "$t0" "$(now)")

# the CLI the agent installed, reading /etc/pgdr/pgdr.conf and /etc/pgdr/credentials
say "pgdr info (the CLI on the node)"
runuser -u postgres -- pgdr info
pgdr info --json > "$work/info.json"
"$PY" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["backups"][-1]))' \
    "$work/info.json" > "$work/backup.json"

target="$LAB/restore/data"
port=$("$PY" scripts/demo_lab.py free-port)
"$PY" scripts/demo_lab.py register "$target" "$port"   # so that `make lab-down` stops it
say "restore: ansible-playbook pgdr.postgresql.restore -e target=$target -e restore_port=$port"
t0=$(now)
ansible-playbook -i "$inventory" pgdr.postgresql.restore \
    -e point=latest -e "target=$target" -e "restore_port=$port" -e restore_force=true
t_restore=$(elapsed "$t0" "$(now)")
printf '{"target": "%s", "port": %s}\n' "$target" "$port" > "$work/restore.json"

say "compare: every table of every database, lab primary vs restored copy"
source_port=$("$PY" -c 'import json; print(json.load(open(".lab/state.json"))["pg"]["port"])')
set +e
"$PY" scripts/compare_data.py --json "$work/compare.json" \
    --source "host=127.0.0.1 port=$source_port user=postgres" \
    --copy "host=127.0.0.1 port=$port user=postgres"
rc=$?
set -e
[ "$rc" -le 1 ] || die "could not compare the clusters"

printf 'backup=%s restore=%s total=%s\n' "$t_backup" "$t_restore" \
    "$(elapsed "$t_start" "$(now)")" > "$work/timings"
"$PY" scripts/demo_lab.py report "$work/backup.json" "$work/restore.json" "$work/info.json" \
    "$work/compare.json" "$work/timings"
