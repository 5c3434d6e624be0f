#!/usr/bin/env bash
# How many instructions jitgate executes per transaction, counted by
# callgrind. Unlike a timing on a shared 2-core VM, the count is the same
# from run to run (within a fraction of a percent), so it shows whether a
# change to the hot path made it cheaper, even when overhead.sh cannot.
#
#   benches/instructions.sh                       # pgbench -S, simple and extended
#   MODES=extended TXNS=1000 TOP=40 benches/instructions.sh
#
# It starts jitgate (TLS off, audit on, fsync 100ms) under
# `valgrind --tool=callgrind` in front of the PostgreSQL at
# PGHOST_DIRECT:PGPORT_DIRECT, warms it up with 50 transactions per client,
# zeroes the counters, runs `pgbench -n -S -c CLIENTS -t TXNS`, and prints
# for each mode the user-space instructions per transaction, the same
# without SHA-256's compression function, and the TOP functions by their
# own (exclusive) count.
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
#   MODES="simple extended"  pgbench -M values
#   CLIENTS=8 TXNS=500       pgbench -c and -t (transactions per client)
#   TOP=25                   functions listed per mode
#   PGHOST_DIRECT=127.0.0.1 PGPORT_DIRECT=5432 PGUSER_DIRECT=postgres BENCH_DB=jitgate_bench
#   SKIP_BUILD=1 / JITGATE_BIN=path   as in overhead.sh
#   KEEP=1                   keep the work directory (callgrind.out.* files for callgrind_annotate)
#
# Needs: valgrind (installed from Debian if missing), pgbench, psql, cargo.

set -euo pipefail

MODES=${MODES:-"simple extended"}
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
make_work_dir
bench_database 1

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
echo "binary $JITGATE (checkout $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty')); pgbench -n -S -c $CLIENTS -j 2 -t $TXNS"
for mode in $MODES; do
    dir=$WORK/$mode
    port=$(free_port)
    admin=$(free_port)
    mkdir -p "$dir"
    write_jitgate_config "$dir" "$port" "$admin" false postgres "$PGHOST_DIRECT:$PGPORT_DIRECT" "$PGUSER_DIRECT"
    (cd "$dir" && exec valgrind --tool=callgrind --dump-instr=no --compress-strings=no \
        --callgrind-out-file="$dir/callgrind.out" "$JITGATE" serve -c jitgate.toml) >"$dir/jitgate.log" 2>&1 &
    vg=$!
    PIDS+=("$vg")
    wait_port "$admin" 120 && wait_port "$port" 30 ||
        { cat "$dir/jitgate.log" >&2; die "jitgate under callgrind did not start"; }
    grant_alice "$admin"
    conn="host=127.0.0.1 port=$port user=alice dbname=bench sslmode=disable"
    PGPASSWORD=$ALICE_SECRET pgbench -n -S -M "$mode" -c "$CLIENTS" -j 2 -t 50 "$conn" >"$dir/warmup.log" 2>&1 ||
        { cat "$dir/warmup.log" >&2; die "pgbench through jitgate failed ($mode)"; }
    callgrind_control -z "$vg" >/dev/null 2>&1
    PGPASSWORD=$ALICE_SECRET pgbench -n -S -M "$mode" -c "$CLIENTS" -j 2 -t "$TXNS" "$conn" >"$dir/pgbench.log" 2>&1 ||
        { cat "$dir/pgbench.log" >&2; die "pgbench through jitgate failed ($mode)"; }
    callgrind_control -d "$vg" >/dev/null 2>&1
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    done_txns=$(awk '/actually processed/ { split($NF, a, "/"); print a[1] }' "$dir/pgbench.log")
    [[ $done_txns == $((CLIENTS * TXNS)) ]] || die "pgbench completed $done_txns of $((CLIENTS * TXNS)) transactions ($mode)"
    # callgrind.out.1 is the dump of the measured run; callgrind.out, written at
    # exit, holds only what came after it.
    dump=$dir/callgrind.out.1
    [[ -s $dump ]] || die "no callgrind dump for $mode (callgrind_control -d failed?)"
    self_costs "$dump" >"$dir/self.txt"
    awk -v n="$done_txns" -v mode="$mode" -v top="$TOP" '
        { total += $1; if ($2 ~ /^sha2::sha256::/) sha += $1; line[NR] = $0 }
        END {
            printf "\n%-9s %d transactions: %.0f instructions per transaction, %.0f without SHA-256 compression\n", mode, n, total / n, (total - sha) / n
            for (i = 1; i <= top && i <= NR; i++) {
                split(line[i], f, " "); name = substr(line[i], length(f[1]) + 2)
                printf "  %8.0f %5.1f%%  %s\n", f[1] / n, 100 * f[1] / total, substr(name, 1, 110)
            }
        }' "$dir/self.txt"
done
