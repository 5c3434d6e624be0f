#!/usr/bin/env bash
# Regenerates tests/corpus/postgres_clients.jsonl: every statement that real
# PostgreSQL clients send while only reading (psql and its meta-commands,
# pg_dump, pg_dumpall --globals-only, psycopg2, JDBC), and the writes a driver
# sends, captured from a throwaway server's own statement log
# (log_statement = all, csvlog).
#
# The reading clients run with default_transaction_read_only = on, so the
# server itself vouches that nothing they sent wrote; each statement is
# stored as the server logged it, with the client that sent it (its
# application_name) and the kind jitgate must give it. tests/client_corpus.rs
# classifies every entry.
#
# Usage: tests/corpus/capture_postgres_clients.sh   (as root or as postgres;
# needs the PostgreSQL server binaries, psql, pg_dump and python3-psycopg2;
# JDBC's statements need default-jdk-headless and libpostgresql-jdbc-java)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="$here/postgres_clients.jsonl"
bindir=""
for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/postgres" ]; then bindir="$dir"; fi
done
[ -n "$bindir" ] || { echo "no PostgreSQL server binaries found" >&2; exit 1; }

work="$(mktemp -d /tmp/jitgate-capture-XXXXXX)"
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; fi
cleanup() {
    as_postgres "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$((40000 + RANDOM % 20000))
as_postgres "$bindir/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
as_postgres "$bindir/pg_ctl" -D "$work/data" -w -l "$work/server.log" -o \
    "-p $port -k $work -c listen_addresses=127.0.0.1 -c logging_collector=on \
     -c log_destination=csvlog -c log_directory=$work/log -c log_statement=all" \
    start >/dev/null

export PGHOST="$work" PGPORT="$port" PGUSER=postgres
psql_setup() { PGAPPNAME=setup psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_setup -d postgres -c "CREATE DATABASE app"
psql_setup -d app <<'SQL'
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric(10, 2));
CREATE INDEX items_name ON items (name);
COMMENT ON TABLE items IS 'things';
INSERT INTO items (name, price) VALUES ('apple', 1), ('banana', 2), ('cherry', 3);
CREATE VIEW cheap AS SELECT * FROM items WHERE price < 2;
CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n FROM items;
CREATE SEQUENCE tickets;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE FUNCTION add_one(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x + 1';
CREATE SCHEMA reporting;
CREATE TABLE reporting.events (at timestamptz, what text) PARTITION BY RANGE (at);
CREATE TABLE reporting.events_2026 PARTITION OF reporting.events
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE ROLE reader;
GRANT SELECT ON items TO reader;
SQL

read_only="-c default_transaction_read_only=on"

# psql itself and its meta-commands, one application_name each.
while IFS= read -r command; do
    [ -n "$command" ] || continue
    PGAPPNAME="psql $command" PGOPTIONS="$read_only" \
        psql -X -q -d app -c "$command" >/dev/null 2>&1 || true
done <<'COMMANDS'
\l
\l+
\dn
\dn+
\dt
\dt+
\d
\d items
\d+ items
\d reporting.events
\di
\dv
\dm
\ds
\df
\df+
\dT
\dD
\du
\dg
\dp
\dx
\db
\dc
\dC
\dd
\do
\dy
\dE
\dF
\dL
\dconfig
\drds
\dRp
\dRs
\sf add_one
\sv cheap
\copy items to /dev/null
SELECT * FROM items \gdesc
COMMANDS
PGAPPNAME="psql interactive" PGOPTIONS="$read_only" psql -X -q -d app >/dev/null 2>&1 <<'PSQL' || true
\x
\timing on
SELECT * FROM items;
TABLE items;
\conninfo
\encoding
PSQL

# pg_dump and pg_dumpall, read-only by design.
PGAPPNAME="pg_dump schema" PGOPTIONS="$read_only" pg_dump -s app >/dev/null
PGAPPNAME="pg_dump data" PGOPTIONS="$read_only" pg_dump -a app >/dev/null
PGAPPNAME="pg_dump custom" PGOPTIONS="$read_only" pg_dump -Fc app >/dev/null
PGAPPNAME="pg_dumpall globals" PGOPTIONS="$read_only" pg_dumpall -g >/dev/null

# psycopg2 reading: parameters, server-side cursors, scrolling, read-only
# and deferrable transactions, COPY out, type introspection.
PGOPTIONS="$read_only" /usr/bin/python3 - <<'PY'
import psycopg2, psycopg2.extras, io
conn = psycopg2.connect(dbname="app", application_name="psycopg2 read")
cur = conn.cursor()
cur.execute("SELECT name FROM items WHERE id = %s", (1,))
cur.fetchall()
conn.rollback()
conn.set_session(readonly=True, deferrable=True, isolation_level="SERIALIZABLE")
named = conn.cursor("reader")
named.execute("SELECT * FROM items ORDER BY id")
named.fetchmany(2)
named.scroll(0, mode="absolute")
named.fetchone()
named.close()
conn.commit()
conn.set_session(readonly=True, deferrable=False, isolation_level="REPEATABLE READ")
held = conn.cursor("holder", withhold=True)
held.execute("SELECT id FROM items")
held.fetchall()
held.close()
conn.commit()
conn.autocommit = True
cur = conn.cursor()
cur.copy_expert("COPY items TO STDOUT WITH CSV HEADER", io.StringIO())
cur.copy_expert("COPY (SELECT * FROM items) TO STDOUT", io.StringIO())
cur.execute("SHOW server_version")
cur.execute("SELECT oid, typname FROM pg_type WHERE typname = %s", ("mood",))
conn.close()
PY

# JDBC reading (DatabaseMetaData as GUI clients use it, server-prepared
# statements, a cursor-backed fetch), if the driver is installed.
jdbc_jar=/usr/share/java/postgresql.jar
if [ -r "$jdbc_jar" ] && command -v java >/dev/null; then
    PGOPTIONS="$read_only" java -cp "$jdbc_jar" "$here/JdbcReader.java" \
        "jdbc:postgresql://127.0.0.1:$port/app?options=-c%20default_transaction_read_only=on"
else
    echo "skipping JDBC: install default-jdk-headless and libpostgresql-jdbc-java" >&2
fi

# psycopg2 writing, in autocommit so that every statement is a write.
/usr/bin/python3 - <<'PY'
import psycopg2
conn = psycopg2.connect(dbname="app", application_name="psycopg2 write")
conn.autocommit = True
cur = conn.cursor()
cur.execute("INSERT INTO items (name, price) VALUES (%s, %s)", ("date", 4))
cur.execute("UPDATE items SET price = price + 1 WHERE name = %s", ("date",))
cur.execute("DELETE FROM items WHERE name = %s", ("date",))
cur.execute("SELECT * FROM items WHERE id = %s FOR UPDATE", (1,))
cur.execute("SELECT nextval('tickets')")
cur.execute("CREATE TEMP TABLE scratch (x int)")
cur.execute("REFRESH MATERIALIZED VIEW totals")
conn.close()
PY

# The log, as the server wrote it, into one JSON line per statement.
sleep 1
/usr/bin/python3 - "$work/log" "$out" <<'PY'
import csv, glob, json, re, sys
log_dir, out = sys.argv[1], sys.argv[2]
entries, seen = [], set()
for path in sorted(glob.glob(log_dir + "/*.csv")):
    with open(path, newline="") as f:
        for row in csv.reader(f):
            message, app = row[13], row[22]
            m = re.match(r"(?:statement|execute [^:]*): (.*)", message, re.S)
            if not m or app in ("setup", "") or app.startswith("pg_regress"):
                continue
            kind = "write" if app == "psycopg2 write" else "read"
            key = (app, m.group(1))
            if key in seen:
                continue
            seen.add(key)
            entries.append({"client": app, "kind": kind, "sql": m.group(1)})
with open(out, "w") as f:
    for e in entries:
        f.write(json.dumps(e, ensure_ascii=False) + "\n")
print(f"{len(entries)} statements from {len({e['client'] for e in entries})} clients -> {out}")
PY
