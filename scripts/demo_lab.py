"""Helpers of scripts/demo.sh (the lab demo): inventory, ports, the restored server.

    python scripts/demo_lab.py inventory         write .lab/inventory.yml (0600) from .lab/state.json
    python scripts/demo_lab.py free-port            print a free TCP port on 127.0.0.1
    python scripts/demo_lab.py register DATADIR PORT   record the restored server in .lab/restored.json
    python scripts/demo_lab.py stop-restored        stop every server recorded in .lab/restored.json
    python scripts/demo_lab.py stop-all             that, the lab's primary, and pgdr's background
                                                    WAL workers of the lab (scripts/demo.sh stop)
    python scripts/demo_lab.py write-rows OUT       rows 1..10 in shop.pitr_demo, one commit each; a
                                                    time T between rows 5 and 6 -> OUT (JSON)
    python scripts/demo_lab.py archive-wait OUT     pg_switch_wal(), wait until pg_stat_archiver has
                                                    archived that segment -> OUT (JSON)
    python scripts/demo_lab.py archive-lag OUT      RPO now: .ready files (pg_ls_archive_statusdir)
    python scripts/demo_lab.py wait-promoted PORT   wait until a restored copy has ended recovery
    python scripts/demo_lab.py check-pitr PORT ROWS OUT   the restored copy holds exactly rows 1..5
    python scripts/demo_lab.py report FILE...       print the demo report from the JSON facts files

Standard library, plus psycopg2 for the SQL of write-rows, archive-*, check-pitr (the repo's
.venv has it).
"""
import json
import os
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
DEMO_RPO = 60  # pgdr_archiving_rpo of the lab, seconds


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
        # WAL archiving (role archiving, run by the setup playbook): the spool lives in the
        # lab, so that a new lab never meets the spool files of an earlier one
        "pgdr_spool_dir": str(LAB / "spool"),
        "pgdr_archiving_rpo": DEMO_RPO,
        # the lab's postgres runs under no service manager, so the role restarts it with
        # pg_ctl (pgdr_archiving_service_name auto); its log stays where lab.py started it
        "pgdr_archiving_pg_ctl_log": st["pg"]["log"],
    }
    doc = {"all": {"children": {"pgdr_nodes": {"hosts": {"localhost": node},
                                               "vars": group_vars}}}}
    header = ("# Written by scripts/demo_lab.py from .lab/state.json: the lab's inventory.\n"
              "# Mode 0600: it holds the lab's S3 keys (use ansible-vault for real ones).\n")
    _write_private(INVENTORY, header + json.dumps(doc, indent=2) + "\n")
    print(INVENTORY)


def free_port():
    """The lab's rule for listening ports (lab.lab.free_port: below the ephemeral range)."""
    sys.path.insert(0, str(REPO))
    from lab.lab import free_port as lab_free_port  # pylint: disable=import-outside-toplevel
    print(lab_free_port())


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
    # also when an interrupted run did not record them
    for default in (str(LAB / "restore" / "data"), str(LAB / "restore" / "pitr")):
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


def _lab_workers():
    """pids of pgdr's background WAL workers (wal-push / wal-fetch) working for a cluster of
    the lab: their working directory is a data directory under .lab (archive_command and
    restore_command run there, and the detached worker keeps it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(str(entry / "cwd"))
        except OSError:
            continue
        words = [w.decode("utf-8", "replace") for w in cmdline]
        if not {"wal-push", "wal-fetch"} & set(words) or "pgdr" not in " ".join(words):
            continue
        if cwd == str(LAB) or cwd.startswith(str(LAB) + "/"):
            found.append(int(entry.name))
    return found


def stop_all():
    """scripts/demo.sh stop (make lab-down): the restored servers, the lab's primary, then
    pgdr's WAL workers of the lab, which exit by themselves archive_idle seconds after their
    last work (waited for; what is left after 20 s is terminated, by pid)."""
    stop_restored()
    if STATE.exists():
        st = _state()
        pg_ctl, datadir = Path(st["pg"]["bindir"]) / "pg_ctl", st["pg"]["datadir"]
        if (Path(datadir) / "postmaster.pid").exists() and \
                _as_postgres(pg_ctl, "-D", datadir, "status").returncode == 0:
            res = _as_postgres(pg_ctl, "-D", datadir, "-m", "fast", "-w", "-t", "60", "stop")
            print("demo: stopped the lab's primary%s"
                  % ("" if res.returncode == 0 else " (pg_ctl: %s)" % res.stderr.strip()))
    deadline = time.time() + 20
    workers = _lab_workers()
    if workers:
        print("demo: waiting for %d pgdr WAL worker(s) to finish" % len(workers))
    while workers and time.time() < deadline:
        time.sleep(0.5)
        workers = _lab_workers()
    for pid in workers:
        try:
            os.kill(pid, 15)
            print("demo: terminated pgdr worker %d" % pid)
        except OSError:
            pass


def _connect(port, dbname="postgres"):
    import psycopg2
    conn = psycopg2.connect(host="127.0.0.1", port=int(port), user=PG_USER, dbname=dbname,
                            connect_timeout=10)
    conn.autocommit = True
    return conn


def _one(conn, sql, args=()):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def _primary_port():
    return _state()["pg"]["port"]


PITR_ROWS, PITR_BEFORE = 10, 5


def write_rows(out):
    """Rows 1..10 in shop.pitr_demo, each in its own transaction ~0.4 s apart; between the
    commits of rows 5 and 6 the server's clock_timestamp() is noted as T (UTC)."""
    conn = _connect(_primary_port(), "shop")
    _one(conn, "DROP TABLE IF EXISTS pitr_demo; CREATE TABLE pitr_demo (k int PRIMARY KEY, "
               "note text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp()); "
               "SELECT 1")
    time.sleep(0.4)
    rows, target = [], None
    for k in range(1, PITR_ROWS + 1):
        at = _one(conn, "INSERT INTO pitr_demo (k, note) VALUES (%s, %s) RETURNING "
                        "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                  (k, "row %d" % k))[0]
        rows.append({"k": k, "at": at})
        time.sleep(0.4)
        if k == PITR_BEFORE:
            target = _one(conn, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")[0]
            time.sleep(0.4)
    conn.close()
    Path(out).write_text(json.dumps({"target": target, "rows": rows, "expected":
                                     list(range(1, PITR_BEFORE + 1))}, indent=2) + "\n")
    for row in rows:
        print("  row %2d committed %s%s" % (row["k"], row["at"],
                                            "" if row["k"] != PITR_BEFORE
                                            else "\n  ---- T = %s" % target))


def archive_wait(out):
    """Close the current WAL segment and wait until the archiver has stored it."""
    conn = _connect(_primary_port())
    segment = _one(conn, "SELECT pg_walfile_name(pg_switch_wal())")[0]
    start = time.time()
    while True:
        last, failed = _one(conn, "SELECT coalesce(last_archived_wal, ''), "
                                  "coalesce(last_failed_wal, '') FROM pg_stat_archiver")
        if last >= segment:
            break
        if time.time() - start > 120:
            sys.exit("demo: segment %s not archived after 120 s (last archived %r, last "
                     "failed %r): see the server log" % (segment, last, failed))
        time.sleep(0.1)
    waited = time.time() - start
    conn.close()
    Path(out).write_text(json.dumps({"segment": segment, "seconds": waited}) + "\n")
    print("  segment %s archived %.1f s after pg_switch_wal()" % (segment, waited))


def archive_lag(out):
    """RPO now: WAL PostgreSQL has finished but the archive does not hold yet (.ready files),
    and what pg_stat_archiver says."""
    conn = _connect(_primary_port())
    ready, oldest = _one(conn, "SELECT count(*), coalesce(extract(epoch FROM now() - "
                               "min(modification)), 0) FROM pg_ls_archive_statusdir() "
                               "WHERE name ~ '[.]ready$'")
    row = _one(conn, "SELECT archived_count, last_archived_wal, coalesce(extract(epoch FROM "
                     "now() - last_archived_time), -1), failed_count, "
                     "current_setting('archive_timeout'), current_setting('archive_mode') "
                     "FROM pg_stat_archiver")
    conn.close()
    facts = {"ready": int(ready), "oldest_ready_seconds": float(oldest),
             "archived_count": row[0], "last_archived_wal": row[1],
             "last_archived_age": float(row[2]), "failed_count": row[3],
             "archive_timeout": row[4], "archive_mode": row[5]}
    Path(out).write_text(json.dumps(facts) + "\n")


def wait_promoted(port, timeout=300):
    """A restored copy accepts connections once consistent (hot standby), while it may
    still be replaying WAL: wait until recovery has ended (the copy promoted)."""
    start = time.time()
    while True:
        try:
            conn = _connect(port)
            recovering = _one(conn, "SELECT pg_is_in_recovery()")[0]
            conn.close()
        except Exception as exc:  # still starting
            recovering = str(exc)
        if recovering is False:
            return time.time() - start
        if time.time() - start > timeout:
            sys.exit("demo: the copy on port %s is still in recovery after %d s" % (port, timeout))
        time.sleep(0.2)


def check_pitr(port, rows_file, out):
    facts = json.loads(Path(rows_file).read_text())
    conn = _connect(port, "shop")
    with conn.cursor() as cur:
        cur.execute("SELECT k FROM pitr_demo ORDER BY k")
        found = [r[0] for r in cur.fetchall()]
    # the timeline being written (pg_control_checkpoint() lags until the first checkpoint
    # after the promotion)
    recovering, timeline = _one(conn, "SELECT pg_is_in_recovery(), CASE WHEN "
                                      "pg_is_in_recovery() THEN NULL ELSE ('x' || substr("
                                      "pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)"
                                      "::int END")
    archive_mode = _one(conn, "SHOW archive_mode")[0]
    conn.close()
    result = {"found": found, "expected": facts["expected"], "equal": found == facts["expected"],
              "in_recovery": recovering, "timeline": timeline, "archive_mode": archive_mode,
              "target": facts["target"]}
    Path(out).write_text(json.dumps(result) + "\n")
    print("  restored copy at T=%s holds rows %s (expected %s): %s; timeline %s, archive_mode %s"
          % (facts["target"], found, facts["expected"],
             "EXACT" if result["equal"] else "DIFFERENT", timeline, archive_mode))
    return 0 if result["equal"] else 1


def report(backup_file, restore_file, info_file, compare_file, timings_file, pitr_file,
           archived_file, lag_file):
    backup = json.loads(Path(backup_file).read_text())
    restore = json.loads(Path(restore_file).read_text())
    info = json.loads(Path(info_file).read_text())
    compare = json.loads(Path(compare_file).read_text())
    timings = dict(line.split("=", 1) for line in Path(timings_file).read_text().split())
    pitr = json.loads(Path(pitr_file).read_text())
    archived = json.loads(Path(archived_file).read_text())
    lag = json.loads(Path(lag_file).read_text())
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
        "  WAL archiving      archive_mode %s, archive_timeout %s (pgdr_archiving_rpo %d s); %d "
        "segments archived, %d failed; pg_switch_wal() -> archived in %.1f s"
        % (lag["archive_mode"], lag["archive_timeout"], DEMO_RPO, lag["archived_count"],
           lag["failed_count"], archived["seconds"]),
        "  restore latest     %s s (RTO: restore playbook start until the copy had replayed the "
        "archive to its end and promoted)"
        % timings["restore"],
        "  data check         %s: %d tables in %d databases, %d rows%s"
        % ("MATCH" if compare["equal"] else "DIFFERENT", compare["tables"],
           len(compare["databases"]), compare["rows"],
           "" if compare["equal"] else " - differences: " + "; ".join(compare["differences"][:5])),
        "  restore point=T    %s s (RTO: restore playbook start until the copy stopped at T and "
        "promoted), T = %s"
        % (timings["pitr"], pitr["target"]),
        "  PITR check         %s: shop.pitr_demo holds rows %s, expected %s (rows 6-10 were "
        "committed after T); timeline %s, archive_mode %s"
        % ("EXACT" if pitr["equal"] else "DIFFERENT", pitr["found"], pitr["expected"],
           pitr["timeline"], pitr["archive_mode"]),
        "  RPO now            %d segment(s) waiting for the archive (.ready), the oldest %.0f s "
        "old; last segment %s archived %.0f s ago; at most archive_timeout (%s) of work "
        "lives only in pg_wal" % (lag["ready"], lag["oldest_ready_seconds"],
                                  lag["last_archived_wal"], lag["last_archived_age"],
                                  lag["archive_timeout"]),
        "  restored servers   %s (port %s) and %s (port %s), running; stop them with "
        "`make lab-down` or `scripts/demo.sh stop`"
        % (restore["target"], restore["port"], restore["pitr_target"], restore["pitr_port"]),
        "  whole demo         %s s" % timings["total"],
    ]
    print("\n".join(lines))
    return 0 if compare["equal"] and pitr["equal"] else 1


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
    elif cmd == "stop-all":
        stop_all()
    elif cmd == "write-rows":
        write_rows(*args)
    elif cmd == "archive-wait":
        archive_wait(*args)
    elif cmd == "archive-lag":
        archive_lag(*args)
    elif cmd == "wait-promoted":
        print("  recovery ended (promoted) %.1f s after the playbook returned"
              % wait_promoted(*args))
    elif cmd == "check-pitr":
        return check_pitr(*args)
    elif cmd == "report":
        return report(*args)
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
