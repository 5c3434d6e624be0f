#!/usr/bin/env bash
# How many instructions jitgate executes per transaction, counted by
# callgrind. Unlike a timing on a shared 2-core VM, the count is the same
# from run to run (within a fraction of a percent), so it shows whether a
# change to the hot path made it cheaper, even when overhead.sh cannot.
#
#   benches/instructions.sh                       # pgbench -S, simple and extended
#   MODES=extended TXNS=1000 TOP=40 benches/instructions.sh
#   PROTOCOLS=mysql benches/instructions.sh       # benches/mysql_load.rs through the MySQL front
#
# It starts jitgate (TLS off, audit on, fsync 100ms) under
# `valgrind --tool=callgrind` in front of the PostgreSQL at
# PGHOST_DIRECT:PGPORT_DIRECT, warms it up with 50 transactions per client,
# zeroes the counters, runs `pgbench -n -S -c CLIENTS -t TXNS`, and prints
# for each mode the user-space instructions per transaction, the same
# without SHA-256's compression function, and the TOP functions by their
# own (exclusive) count. For `mysql` the load is benches/mysql_load.rs
# against MYSQL_HOST:MYSQL_PORT (as overhead.sh runs it; simple = text
# queries, extended = prepared statements), for SECS seconds after a 3 s
# warm-up, since it runs for a time rather than a count.
#
# Why SHA-256 is shown apart: valgrind does not emulate the SHA extensions,
# so under callgrind the sha2 crate falls back to its portable code, about
# ten times the instructions it runs on a CPU that has them (most x86-64
# servers of the last years). The audit chain hashes every line.
#
# Kernel time (the syscalls, the loopback network, the wake-ups) is not
# counted: see overhead.sh for the whole cost.
#
# Options (environment variables):
#   PROTOCOLS=postgres       postgres and/or mysql
#   MODES="simple extended"  pgbench -M values (mysql_load --mode)
#   CLIENTS=8 TXNS=500       pgbench -c and -t (transactions per client)
#   SECS=10                  mysql_load --secs
#   MYSQL_HOST=127.0.0.1 MYSQL_PORT=3306 MYSQL_USER=root   as in overhead.sh
#   TOP=25                   functions listed per mode
#   PGHOST_DIRECT=127.0.0.1 PGPORT_DIRECT=5432 PGUSER_DIRECT=postgres BENCH_DB=jitgate_bench
#   SKIP_BUILD=1 / JITGATE_BIN=path   as in overhead.sh
#   KEEP=1                   keep the work directory (callgrind.out.* files for callgrind_annotate)
#
# Needs: valgrind (installed from Debian if missing), pgbench, psql, cargo.

set -euo pipefail

PROTOCOLS=${PROTOCOLS:-postgres}
MODES=${MODES:-"simple extended"}
SECS=${SECS:-10}
CLIENTS=${CLIENTS:-8}
TXNS=${TXNS:-500}
TOP=${TOP:-25}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=instructions.sh
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

if ! command -v valgrind >/dev/null; then
    echo "$NAME: installing valgrind from Debian" >&2
    { apt-get install -y -qq valgrind >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }; } ||
        die "could not install valgrind (apt-get install valgrind)"
fi
for tool in pgbench psql cargo awk valgrind callgrind_control; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
build_jitgate
[[ " $PROTOCOLS " == *" mysql "* ]] && build_mysql_load
make_work_dir
[[ " $PROTOCOLS " == *" postgres "* ]] && bench_database 1
[[ " $PROTOCOLS " == *" mysql "* ]] && mysql_bench_database

# Exclusive instruction counts per function, from a callgrind output file
# written with --compress-strings=no: "<count> <function>", largest first.
self_costs() {
    awk '
        /^fn=/ { fn = substr($0, 4); call = 0; next }
        /^calls=/ { call = 1; next }
        /^[0-9+*-]/ {
            if (call) { call = 0; next }   # the inclusive cost of a call, not our own
            if (NF >= 2) self[fn] += $2
        }
        END { for (f in self) printf "%d %s\n", self[f], f }
    ' "$1" | sort -rn
}

echo "jitgate instructions per transaction — $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(valgrind --version)"
echo "binary $JITGATE (checkout $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty'))"
echo "load: pgbench -n -S -c $CLIENTS -j 2 -t $TXNS (postgres); benches/mysql_load.rs --clients $CLIENTS --threads 2 --secs $SECS (mysql)"
for protocol in $PROTOCOLS; do for mode in $MODES; do
    dir=$WORK/$protocol-$mode
    port=$(free_port)
    admin=$(free_port)
    mkdir -p "$dir"
    case $protocol in
    postgres) upstream="$PGHOST_DIRECT:$PGPORT_DIRECT" upstream_user=$PGUSER_DIRECT ;;
    mysql) upstream="$MYSQL_HOST:$MYSQL_PORT" upstream_user=$MYSQL_USER ;;
    *) die "PROTOCOLS takes postgres and mysql, not $protocol" ;;
    esac
    write_jitgate_config "$dir" "$port" "$admin" false "$protocol" "$upstream" "$upstream_user"
    (cd "$dir" && exec valgrind --tool=callgrind --dump-instr=no --compress-strings=no \
        --callgrind-out-file="$dir/callgrind.out" "$JITGATE" serve -c jitgate.toml) >"$dir/jitgate.log" 2>&1 &
    vg=$!
    PIDS+=("$vg")
    wait_port "$admin" 120 && wait_port "$port" 30 ||
        { cat "$dir/jitgate.log" >&2; die "jitgate under callgrind did not start"; }
    grant_alice "$admin"
    if [[ $protocol == postgres ]]; then
        conn="host=127.0.0.1 port=$port user=alice dbname=bench sslmode=disable"
        load=(env PGPASSWORD="$ALICE_SECRET" pgbench -n -S -M "$mode" -c "$CLIENTS" -j 2)
        warmup=(-t 50 "$conn")
        measured=(-t "$TXNS" "$conn")
    else
        first_mysql_login "$port" "$dir"
        load=("$MYSQL_LOAD" --port "$port" --user alice --password "$ALICE_SECRET" --db bench
            --mode "$mode" --clients "$CLIENTS" --threads 2)
        warmup=(--secs 3)
        measured=(--secs "$SECS")
    fi
    "${load[@]}" "${warmup[@]}" >"$dir/warmup.log" 2>&1 ||
        { cat "$dir/warmup.log" >&2; die "the load through jitgate failed ($protocol $mode)"; }
    callgrind_control -z "$vg" >/dev/null 2>&1
    "${load[@]}" "${measured[@]}" >"$dir/load.log" 2>&1 ||
        { cat "$dir/load.log" >&2; die "the load through jitgate failed ($protocol $mode)"; }
    callgrind_control -d "$vg" >/dev/null 2>&1
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    done_txns=$(awk '/actually processed/ { split($NF, a, "/"); print a[1] }' "$dir/load.log")
    if [[ $protocol == postgres ]]; then
        [[ $done_txns == $((CLIENTS * TXNS)) ]] || die "pgbench completed $done_txns of $((CLIENTS * TXNS)) transactions ($mode)"
    fi
    [[ ${done_txns:-0} -gt 0 ]] || die "no transactions went through ($protocol $mode)"
    # callgrind.out.1 is the dump of the measured run; callgrind.out, written at
    # exit, holds only what came after it.
    dump=$dir/callgrind.out.1
    [[ -s $dump ]] || die "no callgrind dump for $mode (callgrind_control -d failed?)"
    self_costs "$dump" >"$dir/self.txt"
    awk -v n="$done_txns" -v mode="$protocol $mode" -v top="$TOP" '
        { total += $1; if ($2 ~ /^sha2::sha256::/) sha += $1; line[NR] = $0 }
        END {
            printf "\n%-18s %d transactions: %.0f instructions per transaction, %.0f without SHA-256 compression\n", mode, n, total / n, (total - sha) / n
            for (i = 1; i <= top && i <= NR; i++) {
                split(line[i], f, " "); name = substr(line[i], length(f[1]) + 2)
                printf "  %8.0f %5.1f%%  %s\n", f[1] / n, 100 * f[1] / total, substr(name, 1, 110)
            }
        }' "$dir/self.txt"
done; done
