#!/usr/bin/env bash
# What a hop through jitgate costs, measured side by side with connecting
# straight to PostgreSQL and with pgbouncer, the proxy people already run.
#
#   benches/overhead.sh                 # 5 repetitions x 10 s per run (~12 min)
#   REPS=1 SECS=3 benches/overhead.sh   # a quick check that everything works
#
# It runs `pgbench -S` (select-only) with CLIENTS clients against
#   direct      PostgreSQL itself (PGHOST_DIRECT:PGPORT_DIRECT, trust auth)
#   pgbouncer   pgbouncer in session mode in front of it (installed from Debian if missing)
#   jitgate     jitgate, TLS off (sslmode=disable), audit on
#   jitgate_tls jitgate, TLS on (sslmode=require), audit on
# in three modes: simple protocol, extended protocol, and connect-per-transaction
# (-C, simple protocol). The same three modes run against MySQL/MariaDB with
# benches/mysql_load.rs (a pgbench -S lookalike on mysql_async: text queries,
# prepared statements, a new connection per transaction) as targets
#   mysql         MariaDB/MySQL itself (MYSQL_HOST:MYSQL_PORT as MYSQL_USER, no password)
#   jitgate_mysql jitgate's MySQL front, TLS off, audit on
# whose ratios are to `mysql` (vs_direct) rather than to PostgreSQL. Runs are interleaved (direct, pgbouncer, jitgate,
# jitgate_tls, direct, …) and repeated, and one table is printed with the
# median TPS and latency of each mode x target, its ratio to direct and to
# pgbouncer, and the extra CPU time per transaction,
# (1/tps_proxy - 1/tps_direct) x cores x 10^6 µs, which is what the hop costs
# when pgbench, PostgreSQL and the proxy saturate the machine's cores together.
#
# Options (environment variables):
#   REPS=5            repetitions of the whole interleaved round
#   SECS=10           seconds per pgbench run
#   CLIENTS=8         pgbench -c
#   THREADS=2         pgbench -j
#   SCALE=1           pgbench scale factor of the bench database
#   MODES="simple extended connect"
#   TARGETS="direct pgbouncer jitgate jitgate_tls mysql jitgate_mysql"
#                     (the MySQL pair is left out when nothing answers at MYSQL_HOST:MYSQL_PORT
#                     and TARGETS is not set)
#   PGHOST_DIRECT=127.0.0.1 PGPORT_DIRECT=5432 PGUSER_DIRECT=postgres
#                     the PostgreSQL to measure (trust auth for this user on TCP)
#   BENCH_DB=jitgate_bench   database created there and filled by `pgbench -i`
#                     (and on MySQL, with a 100 000-row table jg_accounts)
#   MYSQL_HOST=127.0.0.1 MYSQL_PORT=3306 MYSQL_USER=root
#                     the MySQL/MariaDB to measure (this user without a password over TCP)
#   AUDIT_FSYNC=100ms jitgate's audit.fsync ("always" for the strict setting)
#   SKIP_BUILD=1      use the existing target/release/jitgate
#   JITGATE_BIN=path  measure this jitgate binary instead (no build; e.g. a patched copy)
#   JITGATE_ALT_BIN=path  also measure this second binary, TLS off, as target
#                     "jitgate_alt" interleaved with the others (before/after comparisons),
#                     and as "jitgate_mysql_alt" when jitgate_mysql is measured
#   KEEP=1            keep the work directory (configs, logs, audit logs, raw results)
#   OUT=path          also write the final report to this file
#
# Needs: pgbench, psql, cargo; root or the pgbouncer binary (pgbouncer refuses
# to run as root, so as root it runs as the `postgres` user via runuser).
# The work directory (audit logs grow by ~1 KB per statement) is under
# $TMPDIR (default /tmp) and removed at exit unless KEEP=1.

set -euo pipefail

REPS=${REPS:-5}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SCALE=${SCALE:-1}
MODES=${MODES:-"simple extended connect"}
MYSQL_HOST=${MYSQL_HOST:-127.0.0.1}
MYSQL_PORT=${MYSQL_PORT:-3306}
MYSQL_USER=${MYSQL_USER:-root}
if [[ -z ${TARGETS:-} ]]; then
    TARGETS="direct pgbouncer jitgate jitgate_tls"
    if (exec 3<>"/dev/tcp/$MYSQL_HOST/$MYSQL_PORT") 2>/dev/null; then
        TARGETS="$TARGETS mysql jitgate_mysql"
    else
        echo "overhead.sh: nothing answers at $MYSQL_HOST:$MYSQL_PORT; MySQL targets skipped" >&2
    fi
fi
if [[ -n ${JITGATE_ALT_BIN:-} ]]; then
    if [[ " $TARGETS " == *" jitgate "* && " $TARGETS " != *" jitgate_alt "* ]]; then
        TARGETS="$TARGETS jitgate_alt"
    fi
    if [[ " $TARGETS " == *" jitgate_mysql "* && " $TARGETS " != *" jitgate_mysql_alt "* ]]; then
        TARGETS="$TARGETS jitgate_mysql_alt"
    fi
fi
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NAME=overhead.sh
# die, cleanup, free_port, wait_port, direct_psql, bench_database,
# write_jitgate_config, grant_alice; PG*_DIRECT, BENCH_DB, AUDIT_FSYNC, JITGATE.
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

# pgbouncer runs as another user: stopped through its pid file.
PGB_PIDFILE=
PGB_PID=
cleanup_extra() {
    if [[ -n $PGB_PIDFILE && -s $PGB_PIDFILE ]]; then
        kill "$(cat "$PGB_PIDFILE")" 2>/dev/null
    fi
}

# ---- tools --------------------------------------------------------------------

for tool in pgbench psql cargo awk; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
PGBOUNCER=$(command -v pgbouncer || true)
if [[ -z $PGBOUNCER && -x /usr/sbin/pgbouncer ]]; then
    PGBOUNCER=/usr/sbin/pgbouncer
fi
if [[ -z $PGBOUNCER && " $TARGETS " == *" pgbouncer "* ]]; then
    echo "overhead.sh: installing pgbouncer from Debian" >&2
    apt-get install -y -qq pgbouncer >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; } ||
        die "could not install pgbouncer (apt-get install pgbouncer)"
    PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    [[ -x $PGBOUNCER ]] || die "pgbouncer installed but not found"
fi

build_jitgate

WANT_MYSQL=0
if [[ " $TARGETS " == *" mysql "* || " $TARGETS " == *" jitgate_mysql"* ]]; then
    WANT_MYSQL=1
    build_mysql_load
fi

make_work_dir

# ---- the bench database -------------------------------------------------------

bench_database "$SCALE"

if [[ $WANT_MYSQL == 1 ]]; then
    mysql_bench_database
fi

# ---- pgbouncer, session mode --------------------------------------------------

PGB_PORT=
if [[ " $TARGETS " == *" pgbouncer "* ]]; then
    PGB_PORT=$(free_port)
    mkdir -p "$WORK/pgbouncer"
    PGB_PIDFILE=$WORK/pgbouncer/pgbouncer.pid
    echo "\"$PGUSER_DIRECT\" \"\"" >"$WORK/pgbouncer/userlist.txt"
    cat >"$WORK/pgbouncer/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=$PGHOST_DIRECT port=$PGPORT_DIRECT dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/pgbouncer/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = $((CLIENTS + 4))
server_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
logfile = $WORK/pgbouncer/pgbouncer.log
pidfile = $PGB_PIDFILE
log_connections = 0
log_disconnections = 0
EOF
    if [[ $(id -u) == 0 ]]; then
        chown -R postgres "$WORK/pgbouncer"
        runuser -u postgres -- "$PGBOUNCER" "$WORK/pgbouncer/pgbouncer.ini" >"$WORK/pgbouncer/stdout.log" 2>&1 &
    else
        "$PGBOUNCER" "$WORK/pgbouncer/pgbouncer.ini" >"$WORK/pgbouncer/stdout.log" 2>&1 &
    fi
    PIDS+=($!)
    wait_port "$PGB_PORT" 10 ||
        { cat "$WORK/pgbouncer/"*.log >&2; die "pgbouncer did not start"; }
    for _ in $(seq 1 50); do [[ -s $PGB_PIDFILE ]] && break; sleep 0.1; done
    PGB_PID=$(cat "$PGB_PIDFILE")
fi

# ---- jitgate, TLS off and TLS on ----------------------------------------------

declare -A JG_PORT JG_ADMIN PROXY_PID
start_jitgate() { # name require_tls binary [protocol]
    local name=$1 require=$2 exe=$3 protocol=${4:-postgres} dir=$WORK/$1
    JG_PORT[$name]=$(free_port)
    JG_ADMIN[$name]=$(free_port)
    mkdir -p "$dir"
    local upstream="$PGHOST_DIRECT:$PGPORT_DIRECT" upstream_user=$PGUSER_DIRECT
    if [[ $protocol == mysql ]]; then
        upstream="$MYSQL_HOST:$MYSQL_PORT" upstream_user=$MYSQL_USER
    fi
    write_jitgate_config "$dir" "${JG_PORT[$name]}" "${JG_ADMIN[$name]}" "$require" "$protocol" "$upstream" "$upstream_user"
    (cd "$dir" && exec "$exe" serve -c jitgate.toml) >"$dir/jitgate.log" 2>&1 &
    PIDS+=($!)
    PROXY_PID[$name]=$!
    wait_port "${JG_ADMIN[$name]}" 20 && wait_port "${JG_PORT[$name]}" 5 ||
        { cat "$dir/jitgate.log" >&2; die "jitgate ($name) did not start"; }
    grant_alice "${JG_ADMIN[$name]}"
    if [[ $protocol == mysql ]]; then
        first_mysql_login "${JG_PORT[$name]}" "$dir"
        return
    fi
    local sslmode=disable
    [[ $require == true ]] && sslmode=require
    PGPASSWORD=$ALICE_SECRET psql -X -At -v ON_ERROR_STOP=1 \
        "host=127.0.0.1 port=${JG_PORT[$name]} user=alice dbname=bench sslmode=$sslmode" \
        -c 'SELECT count(*) FROM pgbench_branches' >/dev/null ||
        { cat "$dir/jitgate.log" >&2; die "psql through jitgate ($name) failed"; }
}
if [[ " $TARGETS " == *" jitgate "* ]]; then start_jitgate jitgate false "$JITGATE"; fi
if [[ " $TARGETS " == *" jitgate_tls "* ]]; then start_jitgate jitgate_tls true "$JITGATE"; fi
if [[ " $TARGETS " == *" jitgate_alt "* ]]; then
    [[ -x ${JITGATE_ALT_BIN:-} ]] || die "target jitgate_alt needs JITGATE_ALT_BIN=path to a jitgate binary"
    start_jitgate jitgate_alt false "$JITGATE_ALT_BIN"
fi
if [[ " $TARGETS " == *" jitgate_mysql "* ]]; then start_jitgate jitgate_mysql false "$JITGATE" mysql; fi
if [[ " $TARGETS " == *" jitgate_mysql_alt "* ]]; then
    [[ -x ${JITGATE_ALT_BIN:-} ]] || die "target jitgate_mysql_alt needs JITGATE_ALT_BIN=path to a jitgate binary"
    start_jitgate jitgate_mysql_alt false "$JITGATE_ALT_BIN" mysql
fi

# ---- the runs -----------------------------------------------------------------

# CPU time (user + system, in clock ticks) a process has used so far.
proc_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
CLK_TCK=$(getconf CLK_TCK)

# Busy and total jiffies of all CPUs, from /proc/stat.
cpu_jiffies() {
    awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6; print busy, total }' /proc/stat
}

RESULTS=$WORK/results.tsv
printf 'rep\tmode\ttarget\ttps\tlatency_ms\tcpu_busy_pct\tproxy_cpu_us_per_txn\n' >"$RESULTS"

run_pgbench() { # rep mode target
    local rep=$1 mode=$2 target=$3
    local host=127.0.0.1 port user=$PGUSER_DIRECT db=$BENCH_DB sslmode=disable password=
    case $target in
    direct) host=$PGHOST_DIRECT port=$PGPORT_DIRECT ;;
    pgbouncer) port=$PGB_PORT ;;
    jitgate) port=${JG_PORT[jitgate]} user=alice db=bench password=$ALICE_SECRET ;;
    jitgate_tls) port=${JG_PORT[jitgate_tls]} user=alice db=bench password=$ALICE_SECRET sslmode=require ;;
    jitgate_alt) port=${JG_PORT[jitgate_alt]} user=alice db=bench password=$ALICE_SECRET ;;
    mysql) host=$MYSQL_HOST port=$MYSQL_PORT user=$MYSQL_USER ;;
    jitgate_mysql | jitgate_mysql_alt) port=${JG_PORT[$target]} user=alice db=bench password=$ALICE_SECRET ;;
    *) die "unknown target $target" ;;
    esac
    local args=(-n -S -c "$CLIENTS" -j "$THREADS" -T "$SECS")
    case $mode in
    simple) args+=(-M simple) ;;
    extended) args+=(-M extended) ;;
    connect) args+=(-M simple -C) ;;
    *) die "unknown mode $mode" ;;
    esac
    local log=$WORK/run-$rep-$mode-$target.log before after proxy_pid='' proxy_before=0
    case $target in
    pgbouncer) proxy_pid=$PGB_PID ;;
    jitgate*) proxy_pid=${PROXY_PID[$target]} ;;
    esac
    [[ -n $proxy_pid ]] && proxy_before=$(proc_ticks "$proxy_pid")
    before=$(cpu_jiffies)
    if [[ $target == *mysql* ]]; then
        local margs=(--host "$host" --port "$port" --user "$user" --db "$db" --mode "$mode"
            --clients "$CLIENTS" --threads "$THREADS" --secs "$SECS")
        [[ -n $password ]] && margs+=(--password "$password")
        if ! "$MYSQL_LOAD" "${margs[@]}" >"$log" 2>&1; then
            cat "$log" >&2
            die "mysql_load failed: $mode against $target (rep $rep); see above"
        fi
    elif ! PGHOST=$host PGPORT=$port PGUSER=$user PGDATABASE=$db PGSSLMODE=$sslmode \
        PGPASSWORD=$password PGPASSFILE=/dev/null PGAPPNAME=overhead.sh \
        pgbench "${args[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        die "pgbench failed: $mode against $target (rep $rep); see above"
    fi
    after=$(cpu_jiffies)
    local proxy_after=0
    [[ -n $proxy_pid ]] && proxy_after=$(proc_ticks "$proxy_pid")
    local tps lat failed busy txns proxy_us=-
    tps=$(awk '/^tps = / { print $3; exit }' "$log")
    lat=$(awk '/^latency average = / { print $4; exit }' "$log")
    failed=$(awk '/^number of failed transactions: / { print $5; exit }' "$log")
    if [[ -z $tps || -z $lat || ${failed:-0} != 0 ]]; then
        cat "$log" >&2
        die "pgbench gave no result or had failures: $mode against $target (rep $rep)"
    fi
    busy=$(awk -v b="$before" -v a="$after" 'BEGIN { split(b, x, " "); split(a, y, " ");
        d = y[2] - x[2]; printf "%.0f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }')
    txns=$(awk '/^number of transactions actually processed: / { print $6; exit }' "$log")
    if [[ -n $proxy_pid && ${txns:-0} -gt 0 ]]; then
        proxy_us=$(awk -v t=$((proxy_after - proxy_before)) -v hz="$CLK_TCK" -v n="$txns" \
            'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$mode" "$target" "$tps" "$lat" "$busy" "$proxy_us" >>"$RESULTS"
    printf '  rep %s %-8s %-17s %10.1f tps %7.3f ms  cpu %s%%  proxy %s cpu-us/txn\n' \
        "$rep" "$mode" "$target" "$tps" "$lat" "$busy" "$proxy_us" >&2
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
echo "overhead.sh: $REPS x ($MODES) x ($TARGETS), ${SECS}s each; load before: $LOAD_BEFORE" >&2
for rep in $(seq 1 "$REPS"); do
    for mode in $MODES; do
        for target in $TARGETS; do
            run_pgbench "$rep" "$mode" "$target"
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the report ---------------------------------------------------------------

CORES=$(nproc)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
report() {
    echo "jitgate overhead bench — $STARTED"
    echo "machine: $CORES cores ($cpu_model), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
    [[ -n ${JITGATE_ALT_BIN:-} ]] && echo "jitgate_alt, jitgate_mysql_alt: $JITGATE_ALT_BIN (TLS off, audit on)"
    echo "versions: $(direct_psql -d postgres -c 'SHOW server_version' | cut -d' ' -f1) (server), $(pgbench --version), $("$PGBOUNCER" --version 2>/dev/null | head -1), jitgate $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty'), $(rustc --version | cut -d' ' -f1-2)"
    if [[ $WANT_MYSQL == 1 ]]; then
        echo "mysql: $("$MYSQL_CLI" -h "$MYSQL_HOST" -P "$MYSQL_PORT" -u "$MYSQL_USER" --skip-ssl -N -e 'SELECT VERSION()'), benches/mysql_load.rs (mysql_async) with the same clients, threads and seconds; simple = text queries, extended = prepared statements, connect = a login per transaction"
    fi
    echo "setup: pgbench -n -S -c $CLIENTS -j $THREADS -T $SECS, scale $SCALE; $REPS interleaved repetitions; jitgate audit on (fsync $AUDIT_FSYNC), upstream without TLS; pgbouncer session mode"
    echo "load average (1/5/15 min): $LOAD_BEFORE before, $LOAD_AFTER after"
    echo
    awk -F'\t' -v cores="$CORES" -v modes="$MODES" -v targets="$TARGETS" '
        NR == 1 { next }
        { key = $2 SUBSEP $3; n[key]++; tps[key, n[key]] = $4; lat[key, n[key]] = $5; cpu[key, n[key]] = $6; pcpu[key, n[key]] = $7 }
        function median(arr, key, count,    i, j, t, v) {
            for (i = 1; i <= count; i++) v[i] = arr[key, i]
            for (i = 2; i <= count; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
            return count % 2 ? v[(count + 1) / 2] : (v[count / 2] + v[count / 2 + 1]) / 2
        }
        END {
            nm = split(modes, M, " "); nt = split(targets, T, " ")
            printf "%-9s %-17s %10s %8s %9s %8s %12s %13s %10s %6s\n", "mode", "target", "tps", "lat_ms", "vs_direct", "vs_pgb", "tps_range", "extra_cpu_us", "proxy_cpu", "cpu%"
            for (i = 1; i <= nm; i++) {
                pd = (M[i] SUBSEP "direct") in n ? median(tps, M[i] SUBSEP "direct", n[M[i] SUBSEP "direct"]) : 0
                pb = (M[i] SUBSEP "pgbouncer") in n ? median(tps, M[i] SUBSEP "pgbouncer", n[M[i] SUBSEP "pgbouncer"]) : 0
                md = (M[i] SUBSEP "mysql") in n ? median(tps, M[i] SUBSEP "mysql", n[M[i] SUBSEP "mysql"]) : 0
                for (j = 1; j <= nt; j++) {
                    key = M[i] SUBSEP T[j]
                    if (!(key in n)) continue
                    # MySQL rows compare with MySQL itself; there is no pgbouncer for them.
                    if (T[j] ~ /mysql/) { d = md; b = 0; ref = "mysql" } else { d = pd; b = pb; ref = "direct" }
                    t = median(tps, key, n[key]); l = median(lat, key, n[key]); c = median(cpu, key, n[key])
                    p = (pcpu[key, 1] == "-") ? "-" : sprintf("%.1f", median(pcpu, key, n[key]))
                    lo = hi = tps[key, 1]
                    for (k = 2; k <= n[key]; k++) { if (tps[key, k] < lo) lo = tps[key, k]; if (tps[key, k] > hi) hi = tps[key, k] }
                    vd = d > 0 ? sprintf("%.2fx", t / d) : "-"
                    vb = b > 0 ? sprintf("%.2fx", t / b) : "-"
                    extra = (d > 0 && T[j] != ref) ? sprintf("%+.1f", (1 / t - 1 / d) * cores * 1e6) : "-"
                    range = sprintf("%.0f-%.0f", lo, hi)
                    printf "%-9s %-17s %10.0f %8.3f %9s %8s %12s %13s %10s %5.0f%%\n", M[i], T[j], t, l, vd, vb, range, extra, p, c
                }
            }
        }' "$RESULTS"
    echo
    echo "tps and lat_ms are medians over the repetitions (tps_range: min-max); vs_direct / vs_pgb: median tps"
    echo "ratios (for the MySQL rows, vs_direct is to MySQL itself: the mysql row); extra_cpu_us = (1/tps - 1/tps_direct) x $CORES cores x 1e6 (meaningful when cpu% is ~100);"
    echo "proxy_cpu = the proxy process's own CPU time (user + system, /proc/<pid>/stat) per transaction;"
    echo "cpu% = the whole machine's busy share during the runs."
    echo "connect mode: every transaction opens a new connection; through jitgate that is a TLS (jitgate_tls)"
    echo "and SCRAM-SHA-256 login (client-side PBKDF2, 4096 iterations) plus an upstream login, where direct"
    echo "and pgbouncer use trust authentication."
}
if [[ -n ${OUT:-} ]]; then
    report | tee "$OUT"
    cp "$RESULTS" "${OUT%.*}.tsv"
else
    report
fi
