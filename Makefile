# pgdr developer entry points (GNU make). Everything runs as root on Debian 12.
SHELL := /bin/bash
PY    := .venv/bin/python

.PHONY: setup test unit integration sanity lab-up lab-down lab-status demo bench bench-wal bench-diff bench-delta bench-snapshot clean distclean

# apt packages, .venv, PostgreSQL 18 binaries; idempotent and fast when nothing changed
setup:
	bash scripts/bootstrap.sh

# Everything CI runs: ansible-test sanity + ansible-lint (production profile), the Molecule
# scenarios on podman (real nodes: a primary and a standby; three Patroni members), then the
# unit and integration tests on real PostgreSQL and SeaweedFS. pytest's summary closes the
# output.
test: setup
	bash tests/sanity.sh
	bash scripts/molecule.sh
	$(PY) -m pytest tests/unit tests/integration -q --timeout=900 --durations=25

unit: setup
	$(PY) -m pytest tests/unit -q

integration: setup
	$(PY) -m pytest tests/integration -q --timeout=900

sanity: setup
	bash tests/sanity.sh

lab-up: setup
	$(PY) lab/lab.py up

lab-down:
	@if [ -x $(PY) ]; then bash scripts/demo.sh stop; $(PY) lab/lab.py down; else echo "lab: no .venv, nothing to stop"; fi

lab-status:
	$(PY) lab/lab.py status

# Molecule scenarios on podman (extensions/molecule): default (roles on this machine, under
# .cache/molecule/default-root), cluster (primary + standby + S3 in containers: schedule,
# switchover, PITR) and patroni (three Patroni members + etcd + S3: failovers, no WAL gap). Builds the node image on first use (debootstrap, cached by recipe hash).
# One scenario or command: scripts/molecule.sh cluster [converge|verify|destroy|...]
.PHONY: molecule
molecule: setup
	bash scripts/molecule.sh

# The main job: a lab cluster, a backup with backup.yml, a restore with restore.yml into a
# second data directory, the restored copy started and compared table by table, RPO/RTO.
demo: setup
	bash scripts/demo.sh

# Full backup and restore side by side with pgBackRest and Barman cloud (docs/benchmarks.md)
bench: setup
	bash bench/setup.sh && $(PY) bench/run_full.py --rounds 3

# Differential backups against pgBackRest (PG 15) and pg_basebackup --incremental (PG 18)
bench-diff: setup
	bash bench/setup.sh && $(PY) bench/run_diff.py --rounds 2

# Delta restore into yesterday's copy against a restore into an empty directory
bench-delta: setup
	bash bench/setup.sh && $(PY) bench/run_delta.py --rounds 2

# snapshot backup and restore on btrfs against a full backup to S3 (docs/benchmarks.md)
bench-snapshot: setup
	bash bench/setup.sh && $(PY) bench/run_snapshot.py --rounds 2

# WAL archiving lag and WAL fetch throughput against pgBackRest and Barman (docs/benchmarks.md)
bench-wal: setup
	bash bench/setup.sh && $(PY) bench/run_wal.py --rounds 2

# stops the lab and removes run artefacts; keeps .venv and .cache (slow to rebuild)
clean: lab-down
	rm -rf .lab tests/output .pytest_cache build
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf .venv .cache
