# Shared by benches/overhead.sh and benches/instructions.sh (sourced, not run).
# The caller sets NAME (for messages) and ROOT (the repository), and may set
# JITGATE_BIN, SKIP_BUILD, KEEP, AUDIT_FSYNC and the PG*_DIRECT / BENCH_DB
# variables documented in overhead.sh. A caller that starts processes of
# its own that need more than `kill` defines `cleanup_extra`.

PGHOST_DIRECT=${PGHOST_DIRECT:-127.0.0.1}
PGPORT_DIRECT=${PGPORT_DIRECT:-5432}
PGUSER_DIRECT=${PGUSER_DIRECT:-postgres}
BENCH_DB=${BENCH_DB:-jitgate_bench}
AUDIT_FSYNC=${AUDIT_FSYNC:-100ms}
JITGATE=${JITGATE_BIN:-$ROOT/target/release/jitgate}

die() {
    echo "$NAME: $*" >&2
    exit 1
}

# ---- cleanup: every process started here is stopped on exit -------------------

WORK=
PIDS=()
cleanup() {
    local status=$?
    set +e
    if declare -F cleanup_extra >/dev/null; then
        cleanup_extra
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${KEEP:-0} == 1 || $status != 0 ]]; then
            echo "$NAME: work directory kept: $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

MYSQL_HOST=${MYSQL_HOST:-127.0.0.1}
MYSQL_PORT=${MYSQL_PORT:-3306}
MYSQL_USER=${MYSQL_USER:-root}

# Build target/release/jitgate unless told to use an existing binary.
build_jitgate() {
    if [[ ${SKIP_BUILD:-0} != 1 && -z ${JITGATE_BIN:-} ]]; then
        echo "$NAME: cargo build --release" >&2
        (cd "$ROOT" && cargo build --release --quiet --bin jitgate) || die "cargo build --release failed"
    fi
    [[ -x $JITGATE ]] || die "$JITGATE is missing (build it, or unset SKIP_BUILD / JITGATE_BIN)"
}

# The work directory (removed at exit unless KEEP=1 or on failure), and the
# secrets of the bench's two identities.
make_work_dir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/jitgate-${NAME%.sh}.XXXXXX")
    chmod 755 "$WORK"
    ALICE_SECRET=$(random_secret)
    ADMIN_SECRET=$(random_secret)
    ALICE_VERIFIER=$(printf '%s\n' "$ALICE_SECRET" | "$JITGATE" passwd)
    ADMIN_VERIFIER=$(printf '%s\n' "$ADMIN_SECRET" | "$JITGATE" passwd)
}

random_secret() { head -c 18 /dev/urandom | base64 | tr -d '+/='; }

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 10000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free TCP port found"
}

# Wait until something accepts TCP connections on $1, at most $2 seconds.
wait_port() {
    local deadline=$((SECONDS + $2))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

direct_psql() {
    PGSSLMODE=disable psql -X -q -At -v ON_ERROR_STOP=1 \
        -h "$PGHOST_DIRECT" -p "$PGPORT_DIRECT" -U "$PGUSER_DIRECT" "$@"
}

# BENCH_DB on the PostgreSQL to measure, filled by `pgbench -i -s $1`.
bench_database() {
    local scale=$1 branches
    direct_psql -d postgres -c 'SELECT 1' >/dev/null ||
        die "cannot connect to PostgreSQL at $PGHOST_DIRECT:$PGPORT_DIRECT as $PGUSER_DIRECT (trust auth expected)"
    if [[ -z $(direct_psql -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$BENCH_DB'") ]]; then
        direct_psql -d postgres -c "CREATE DATABASE $BENCH_DB" >/dev/null
    fi
    branches=$(direct_psql -d "$BENCH_DB" -c 'SELECT count(*) FROM pgbench_branches' 2>/dev/null || echo 0)
    if [[ $branches != "$scale" ]]; then
        echo "$NAME: pgbench -i -s $scale $BENCH_DB (directly on PostgreSQL)" >&2
        PGSSLMODE=disable pgbench -i -q -s "$scale" -h "$PGHOST_DIRECT" -p "$PGPORT_DIRECT" \
            -U "$PGUSER_DIRECT" "$BENCH_DB" >"$WORK/pgbench-init.log" 2>&1 ||
            { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
    fi
    direct_psql -d "$BENCH_DB" -c 'VACUUM ANALYZE' >/dev/null
}

# jitgate.toml in dir $1: listeners on ports $2 (protocol $5) and $3 (admin),
# TLS required if $4 is true, one target "bench" at $6 logged into as $7.
write_jitgate_config() {
    local dir=$1 port=$2 admin=$3 require=$4 protocol=$5 upstream=$6 upstream_user=$7
    cat >"$dir/jitgate.toml" <<EOF
data_dir = "data"

[listen]
$protocol = "127.0.0.1:$port"
admin = "127.0.0.1:$admin"

[tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
self_signed_if_missing = true
require = $require

[audit]
path = "data/audit.log"
fsync = "$AUDIT_FSYNC"

[limits]
max_sessions = 10000
max_pending_handshakes = 256

[[identities]]
name = "alice"
groups = ["developer"]
secret = "$ALICE_VERIFIER"

[[identities]]
name = "admin"
groups = ["admin"]
secret = "$ADMIN_VERIFIER"

[[targets]]
name = "bench"
protocol = "$protocol"
address = "$upstream"
database = "$BENCH_DB"
tls = "disable"

[targets.levels.write]
user = "$upstream_user"
EOF
}

# A break-glass write grant for alice that outlasts the bench, through the
# admin API on port $1.
grant_alice() {
    local answer
    answer=$(curl -sS --fail-with-body -H "Authorization: Bearer $ADMIN_SECRET" \
        -X POST "http://127.0.0.1:$1/v1/grants" \
        -d '{"identity":"alice","target":"bench","level":"write","duration":"24h","reason":"benches"}') ||
        die "granting alice on jitgate (admin port $1) failed: $answer"
}

# MYSQL_LOAD: benches/mysql_load.rs, built as a bench target and run as a
# plain program. (Picked by name: cargo also reports the jitgate binary, in
# no fixed order.)
build_mysql_load() {
    MYSQL_LOAD=$(cd "$ROOT" && cargo bench --quiet --bench mysql_load --no-run --message-format=json 2>/dev/null |
        grep '"name":"mysql_load"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [[ -n $MYSQL_LOAD && -x $MYSQL_LOAD ]] || die "could not build benches/mysql_load.rs (cargo bench --bench mysql_load --no-run)"
}

# BENCH_DB on the MySQL/MariaDB to measure, with mysql_load's jg_accounts;
# MYSQL_CLI is the client program.
mysql_bench_database() {
    command -v mariadb >/dev/null || command -v mysql >/dev/null || die "the mariadb (or mysql) client is not installed"
    MYSQL_CLI=$(command -v mariadb || command -v mysql)
    "$MYSQL_CLI" -h "$MYSQL_HOST" -P "$MYSQL_PORT" -u "$MYSQL_USER" --skip-ssl \
        -e "CREATE DATABASE IF NOT EXISTS $BENCH_DB" ||
        die "cannot connect to MySQL at $MYSQL_HOST:$MYSQL_PORT as $MYSQL_USER (no password expected)"
    "$MYSQL_LOAD" --init --host "$MYSQL_HOST" --port "$MYSQL_PORT" --user "$MYSQL_USER" --db "$BENCH_DB" ||
        die "filling jg_accounts on MySQL failed"
}

# alice's first login through jitgate's MySQL front on port $1 (logs in
# directory $2). It is a full caching_sha2_password authentication, which
# needs TLS; the bench's plaintext logins then take the fast path.
first_mysql_login() {
    MYSQL_PWD=$ALICE_SECRET "$MYSQL_CLI" -h 127.0.0.1 -P "$1" -u alice --ssl \
        --ssl-verify-server-cert=0 bench -e 'SELECT count(*) FROM jg_accounts' >/dev/null 2>"$2/mysql.err" ||
        MYSQL_PWD=$ALICE_SECRET "$MYSQL_CLI" -h 127.0.0.1 -P "$1" -u alice --ssl \
            bench -e 'SELECT count(*) FROM jg_accounts' >/dev/null 2>>"$2/mysql.err" ||
        { cat "$2/mysql.err" "$2/jitgate.log" >&2; die "mariadb through jitgate (port $1) failed"; }
}
