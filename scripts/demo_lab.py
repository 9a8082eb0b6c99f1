"""Helpers of scripts/demo.sh (the lab demo): inventory, ports, the restored server.

    python scripts/demo_lab.py inventory         write .lab/inventory.yml (0600) from .lab/state.json
    python scripts/demo_lab.py free-port            print a free TCP port on 127.0.0.1
    python scripts/demo_lab.py register DATADIR PORT   record the restored server in .lab/restored.json
    python scripts/demo_lab.py stop-restored        stop every server recorded in .lab/restored.json
    python scripts/demo_lab.py report FILE...       print the demo report from the JSON facts files

Standard library only (runs with the repo's .venv python or /usr/bin/python3).
"""
import calendar
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"
STATE = LAB / "state.json"
INVENTORY = LAB / "inventory.yml"
RESTORED = LAB / "restored.json"
PG_USER = "postgres"


def _state():
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError) as exc:
        sys.exit("demo: cannot read %s (%s): run `python lab/lab.py up`" % (STATE, exc))


def _write_private(path, text):
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def inventory():
    """The inventory contract of docs/inventory.md, filled in with the lab's values.
    JSON is valid YAML: no YAML library needed, and every value is quoted safely."""
    st = _state()
    node = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        # no sudo on the lab machine; root becomes postgres with su
        "ansible_become_method": "ansible.builtin.su",
    }
    group_vars = {
        "pgdr_cluster": "lab",
        "pgdr_repository": {
            "type": "s3",
            "bucket": st["s3"]["bucket"],
            "endpoint": st["s3"]["endpoint"],
            "region": st["s3"]["region"],
            "addressing": "path",
            "prefix": "demo",
        },
        "pgdr_s3_access_key": st["s3"]["access_key"],
        "pgdr_s3_secret_key": st["s3"]["secret_key"],
        "pgdr_pg": {
            "host": "127.0.0.1",
            "port": st["pg"]["port"],
            "user": "postgres",
            "data": st["pg"]["datadir"],
            "bindir": st["pg"]["bindir"],
        },
        "pgdr_workers": 2,
        "pgdr_compression": "zstd",
        "pgdr_restore_target": str(LAB / "restore" / "data"),
    }
    doc = {"all": {"children": {"pgdr_nodes": {"hosts": {"localhost": node},
                                               "vars": group_vars}}}}
    header = ("# Written by scripts/demo_lab.py from .lab/state.json: the lab's inventory.\n"
              "# Mode 0600: it holds the lab's S3 keys (use ansible-vault for real ones).\n")
    _write_private(INVENTORY, header + json.dumps(doc, indent=2) + "\n")
    print(INVENTORY)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def _restored():
    try:
        return json.loads(RESTORED.read_text())
    except (OSError, ValueError):
        return []


def register(datadir, port):
    entries = [e for e in _restored() if e["datadir"] != datadir]
    entries.append({"datadir": datadir, "port": int(port), "bindir": _state()["pg"]["bindir"]})
    _write_private(RESTORED, json.dumps(entries, indent=2) + "\n")


def _as_postgres(*cmd):
    return subprocess.run(["runuser", "-u", PG_USER, "--"] + [str(c) for c in cmd],
                          capture_output=True, text=True, check=False)


def stop_restored():
    """Stop the restored servers of earlier demo runs (make lab-down calls this too)."""
    entries = _restored()
    default = str(LAB / "restore" / "data")  # also when an interrupted run did not record it
    if STATE.exists() and default not in [e["datadir"] for e in entries]:
        entries.append({"datadir": default, "bindir": _state()["pg"]["bindir"]})
    for entry in entries:
        datadir, pg_ctl = entry["datadir"], Path(entry["bindir"]) / "pg_ctl"
        if not (Path(datadir) / "postmaster.pid").exists():
            continue
        if _as_postgres(pg_ctl, "-D", datadir, "status").returncode != 0:
            continue
        res = _as_postgres(pg_ctl, "-D", datadir, "-m", "fast", "-w", "-t", "60", "stop")
        print("demo: stopped the restored server in %s%s"
              % (datadir, "" if res.returncode == 0 else " (pg_ctl: %s)" % res.stderr.strip()))
    if RESTORED.exists():
        RESTORED.unlink()


def report(backup_file, restore_file, info_file, compare_file, timings_file):
    backup = json.loads(Path(backup_file).read_text())
    restore = json.loads(Path(restore_file).read_text())
    info = json.loads(Path(info_file).read_text())
    compare = json.loads(Path(compare_file).read_text())
    timings = dict(line.split("=", 1) for line in Path(timings_file).read_text().split())
    newest = info["backups"][-1] if info.get("backups") else None
    rpo = None
    if newest:
        stop = calendar.timegm(time.strptime(newest["stop_time"], "%Y-%m-%dT%H:%M:%SZ"))
        rpo = time.time() - stop
    mib = 1048576.0
    lines = [
        "",
        "pgdr demo report",
        "  backup id          %s (%s, %s)" % (backup["id"], backup["type"], backup["compression"]),
        "  backup             %.1f s in the engine, %s s for the playbook"
        % (backup["duration"], timings["backup"]),
        "  data read          %.1f MiB (+ %.1f MiB WAL)"
        % (backup["size"] / mib, backup["wal_size"] / mib),
        "  stored size        %.1f MiB in %s (%d backup(s) of cluster %s)"
        % (backup["stored_size"] / mib, info.get("repository", "?"), len(info["backups"]),
           info.get("cluster")),
        "  restore (RTO)      %s s from the restore playbook's start until the restored "
        "server accepted connections" % timings["restore"],
        "  RPO now            %s (age of the newest backup; WAL archiving comes later)"
        % ("%.0f s" % rpo if rpo is not None else "n/a"),
        "  data check         %s: %d tables in %d databases, %d rows%s"
        % ("MATCH" if compare["equal"] else "DIFFERENT", compare["tables"],
           len(compare["databases"]), compare["rows"],
           "" if compare["equal"] else " - differences: " + "; ".join(compare["differences"][:5])),
        "  restored server    %s (port %s), running; stop it with `make lab-down` or "
        "`scripts/demo.sh stop`" % (restore["target"], restore["port"]),
        "  whole demo         %s s" % timings["total"],
    ]
    print("\n".join(lines))
    return 0 if compare["equal"] else 1


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "inventory":
        inventory()
    elif cmd == "free-port":
        free_port()
    elif cmd == "register":
        register(*args)
    elif cmd == "stop-restored":
        stop_restored()
    elif cmd == "report":
        return report(*args)
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
