# pgdr developer entry points (GNU make). Everything runs as root on Debian 12.
SHELL := /bin/bash
PY    := .venv/bin/python

.PHONY: setup test lab-up lab-down lab-status demo clean distclean

# apt packages, .venv, PostgreSQL 18 binaries; idempotent and fast when nothing changed
setup:
	bash scripts/bootstrap.sh

test: setup
	$(PY) -m pytest tests -q -x --timeout=900

lab-up: setup
	$(PY) lab/lab.py up

lab-down:
	@if [ -x $(PY) ]; then $(PY) lab/lab.py down; else echo "lab: no .venv, nothing to stop"; fi

lab-status:
	$(PY) lab/lab.py status

# ---------------------------------------------------------------------------------
# PLACEHOLDER: the lead fills in the demo (backup to the lab bucket, restore, verify).
demo: setup lab-up
	@echo TODO demo
# ---------------------------------------------------------------------------------

# stops the lab and removes run artefacts; keeps .venv and .cache (slow to rebuild)
clean: lab-down
	rm -rf .lab tests/output .pytest_cache build
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf .venv .cache
