#!/usr/bin/env bash
# Installs what bench/run_full.py needs to compare pgdr with pgBackRest and
# Barman cloud on a fresh Debian 12 machine. Idempotent: re-running it only
# checks that everything is there.
#
#   bash bench/setup.sh            # as root
#
# What it installs:
#   - Debian: postgresql-15 (+contrib for pgbench), pgbackrest, openssl,
#     gcc + libpq-dev (only needed if psycopg2 has to be built from source)
#   - bench/.venv-barman: a venv built from /usr/bin/python3 holding
#     barman[cloud] and psycopg2-binary (barman-cloud-backup/-restore)
#   - openssl: lab.py's Seaweed(tls=True) makes the self-signed certificate of the
#     HTTPS port with it (pgBackRest 2.45 talks to S3 over HTTPS only)
#   - matplotlib in the project's .venv, for bench/charts.py
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-barman"

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (apt-get, runuser)" >&2
    exit 1
fi

need=()
command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/pgbench ] || need+=(postgresql-contrib)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/bin/time ] || need+=(time)  # GNU time: the peak memory of every timed command
command -v gcc >/dev/null 2>&1 || need+=(gcc)
dpkg -s libpq-dev >/dev/null 2>&1 || need+=(libpq-dev)
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup.sh: apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
pgbackrest version

if ! [ -x "$venv/bin/barman-cloud-backup" ] || ! "$venv/bin/python" -c 'import psycopg2, boto3, lz4' 2>/dev/null; then
    echo "setup.sh: creating $venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    # lz4 / zstandard / python-snappy: barman's optional compressors
    "$venv/bin/pip" install -q "barman[cloud,lz4,zstandard]" psycopg2-binary
fi
# barman-cloud-* run as user postgres: the venv must be readable by it
chmod -R a+rX "$venv"
"$venv/bin/barman-cloud-backup" --version

# bench/charts.py draws the docs' PNGs with matplotlib, in the project's .venv
if [ -x "$here/../.venv/bin/python" ] && ! "$here/../.venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    "$here/../.venv/bin/pip" install -q matplotlib
fi

echo "setup.sh: ok"
