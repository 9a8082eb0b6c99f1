"""Compare the data of two PostgreSQL clusters, table by table.

    .venv/bin/python scripts/compare_data.py --source "host=127.0.0.1 port=5432 user=postgres" \
                                            --copy "host=127.0.0.1 port=5433 user=postgres" [--json FILE]

For every database that accepts connections (templates excepted) and every table,
materialized view and sequence outside the system schemas, both sides compute the row
count and the MD5 of all rows as text, sorted (so the physical order does not matter).
Exit 0 when everything matches, 1 when anything differs (missing databases or tables too),
2 when a cluster cannot be reached. Needs psycopg2 (the repo's .venv has it).
"""
import argparse
import json
import sys

import psycopg2
from psycopg2 import sql

DATABASES = ("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
             "ORDER BY datname")
RELATIONS = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  AND n.nspname !~ '^pg_temp'
ORDER BY 1, 2
"""


def _connect(dsn, dbname):
    conn = psycopg2.connect(dsn, dbname=dbname, connect_timeout=10)
    conn.set_session(readonly=True, autocommit=True)
    return conn


def fingerprint(dsn):
    """{database: {schema.table: (kind, rows, md5)}}"""
    out = {}
    with _connect(dsn, "postgres") as conn, conn.cursor() as cur:
        cur.execute(DATABASES)
        names = [r[0] for r in cur.fetchall()]
    for db in names:
        tables = {}
        conn = _connect(dsn, db)
        try:
            with conn.cursor() as cur:
                cur.execute(RELATIONS)
                for schema, name, kind in cur.fetchall():
                    ident = sql.Identifier(schema, name)
                    if kind == "S":
                        query = sql.SQL("SELECT 1, md5(last_value::text || ':' || "
                                        "is_called::text) FROM {}").format(ident)
                    else:
                        query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, "
                                        "E'\\n' ORDER BY t::text), '')) FROM {} t").format(ident)
                    cur.execute(query)
                    rows, digest = cur.fetchone()
                    tables["%s.%s" % (schema, name)] = (kind, rows, digest)
        finally:
            conn.close()
        out[db] = tables
    return out


def compare(source, copy):
    differences, tables, rows = [], 0, 0
    for db in sorted(set(source) | set(copy)):
        if db not in copy:
            differences.append("database %s missing from the copy" % db)
            continue
        if db not in source:
            differences.append("database %s only in the copy" % db)
            continue
        for name in sorted(set(source[db]) | set(copy[db])):
            a, b = source[db].get(name), copy[db].get(name)
            if a is None or b is None:
                differences.append("%s/%s only in the %s" % (db, name,
                                                             "copy" if a is None else "source"))
                continue
            tables += 1
            rows += a[1] if a[0] != "S" else 0
            if a != b:
                differences.append("%s/%s: source %s rows md5 %s, copy %s rows md5 %s"
                                   % (db, name, a[1], a[2], b[1], b[2]))
    return {"equal": not differences, "databases": sorted(source), "tables": tables,
            "rows": rows, "differences": differences}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--source", required=True, help="libpq DSN of the source cluster")
    ap.add_argument("--copy", required=True, help="libpq DSN of the restored copy")
    ap.add_argument("--json", help="also write the result as JSON to this file")
    args = ap.parse_args(argv)
    try:
        result = compare(fingerprint(args.source), fingerprint(args.copy))
    except psycopg2.Error as exc:
        print("compare: cannot read a cluster: %s" % str(exc).strip(), file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    for line in result["differences"]:
        print("compare: DIFFERENT " + line)
    print("compare: %s - %d tables/sequences in %d databases (%s), %d rows"
          % ("data match" if result["equal"] else "data DIFFER", result["tables"],
             len(result["databases"]), ", ".join(result["databases"]), result["rows"]))
    return 0 if result["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
