#!/usr/bin/env bash
# The pgdr demo, end to end on this machine (root, Debian 12, after scripts/bootstrap.sh):
#   1. the lab (PostgreSQL 15 with sample data + SeaweedFS S3): python lab/lab.py up
#   2. .lab/inventory.yml (0600) from .lab/state.json
#   3. playbook pgdr.postgresql.setup   - the agent role installs the pgdr CLI on the node and
#                                         the archiving role turns on WAL archiving (RPO 60 s)
#   4. playbook pgdr.postgresql.backup  - a full backup into the lab bucket
#   5. rows 1..10 in shop.pitr_demo, one commit each, a time T noted between rows 5 and 6;
#      pg_switch_wal() and a wait on pg_stat_archiver until that WAL is archived
#   6. playbook pgdr.postgresql.restore - point=latest into .lab/restore/data, start, compare
#      every table of every database with the lab primary
#   7. playbook pgdr.postgresql.restore - point=T into .lab/restore/pitr, start, check that
#      exactly rows 1..5 are there
#   8. report: backup, archiving, both restore times (RTO), the PITR check, RPO now (.ready)
# Exit status: 0 when the data match and the PITR copy is exact, 1 when not, other non-zero
# when a step failed. Re-runnable: the restored servers of the previous run are stopped and
# their directories replaced (restore with force, which pgdr refuses for the data directory
# of a running server).
#   scripts/demo.sh stop     stops the restored servers, the lab's primary and pgdr's WAL
#                            workers of the lab (make lab-down, then lab.py down)
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
    "$PY" scripts/demo_lab.py stop-all
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

say "agent + WAL archiving: ansible-playbook pgdr.postgresql.setup"
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

say "PITR: rows 1..10 in shop.pitr_demo, one commit each; T noted between rows 5 and 6"
"$PY" scripts/demo_lab.py write-rows "$work/rows.json"
point=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["target"])' "$work/rows.json")
say "archive: pg_switch_wal() and wait until pg_stat_archiver reports the segment archived"
"$PY" scripts/demo_lab.py archive-wait "$work/archived.json"

target="$LAB/restore/data"
port=$("$PY" scripts/demo_lab.py free-port)
"$PY" scripts/demo_lab.py register "$target" "$port"   # so that `make lab-down` stops it
say "restore: ansible-playbook pgdr.postgresql.restore -e point=latest -e target=$target -e pgdr_restore_port=$port"
t0=$(now)
ansible-playbook -i "$inventory" pgdr.postgresql.restore \
    -e point=latest -e "target=$target" -e "pgdr_restore_port=$port" -e pgdr_restore_force=true
"$PY" scripts/demo_lab.py wait-promoted "$port"   # connections come before the end of replay
t_restore=$(elapsed "$t0" "$(now)")

say "compare: every table of every database, lab primary vs restored copy (latest)"
source_port=$("$PY" -c 'import json; print(json.load(open(".lab/state.json"))["pg"]["port"])')
set +e
"$PY" scripts/compare_data.py --json "$work/compare.json" \
    --source "host=127.0.0.1 port=$source_port user=postgres" \
    --copy "host=127.0.0.1 port=$port user=postgres"
rc=$?
set -e
[ "$rc" -le 1 ] || die "could not compare the clusters"

pitr_target="$LAB/restore/pitr"
pitr_port=$("$PY" scripts/demo_lab.py free-port)
"$PY" scripts/demo_lab.py register "$pitr_target" "$pitr_port"
say "restore: ansible-playbook pgdr.postgresql.restore -e point=$point -e target=$pitr_target -e pgdr_restore_port=$pitr_port"
t0=$(now)
ansible-playbook -i "$inventory" pgdr.postgresql.restore \
    -e "point=$point" -e "target=$pitr_target" -e "pgdr_restore_port=$pitr_port" -e pgdr_restore_force=true
"$PY" scripts/demo_lab.py wait-promoted "$pitr_port"
t_pitr=$(elapsed "$t0" "$(now)")
printf '{"target": "%s", "port": %s, "pitr_target": "%s", "pitr_port": %s}\n' \
    "$target" "$port" "$pitr_target" "$pitr_port" > "$work/restore.json"

say "PITR check: the copy restored to T holds exactly the rows committed up to T"
set +e
"$PY" scripts/demo_lab.py check-pitr "$pitr_port" "$work/rows.json" "$work/pitr.json"
set -e
[ -s "$work/pitr.json" ] || die "could not check the point-in-time copy"

"$PY" scripts/demo_lab.py archive-lag "$work/lag.json"
printf 'backup=%s restore=%s pitr=%s total=%s\n' "$t_backup" "$t_restore" "$t_pitr" \
    "$(elapsed "$t_start" "$(now)")" > "$work/timings"
"$PY" scripts/demo_lab.py report "$work/backup.json" "$work/restore.json" "$work/info.json" \
    "$work/compare.json" "$work/timings" "$work/pitr.json" "$work/archived.json" "$work/lag.json"
