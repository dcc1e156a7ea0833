#!/usr/bin/env bash
# ha.sh - the high-availability part of `make bench` (also `make bench-ha` alone, ~2 minutes;
# docs/ha.md, issue 15).
#
# Starts a throwaway PostgreSQL 15 cluster the way the tests do (tests/pg/pgtmp.py: initdb +
# pg_ctl in a temporary directory, through runuser as `nobody` when run as root; unix socket;
# here with fsync on, so a commit waits for its WAL flush), three kmsd replicas on it with
# "ha_enabled" (default lease 2 s, heartbeat 500 ms) and, for reference, one kmsd on LMDB (same
# settings, fsync'd store). Audit off, rate limit off, every server on 127.0.0.1 port 0 (the
# bound address read back from its log). Then with wrk (-t$BENCH_THREADS -c$BENCH_CONNECTIONS):
#
#   - encrypt and decrypt of 64 B with a cached key on the LMDB kmsd and on the active replica
#     (target: the active >= 0.90 x LMDB; PostgreSQL is not on the path of a cached key);
#   - the same through a standby, which forwards to the active (the cost of forwarding);
#   - key creation (a new aes256-gcm96 key per request) and rotation of one key, requests/s, on
#     LMDB and on the active (every request is a committed write transaction);
#   - failover: kill -9 of the active, then encrypts sent round-robin to the surviving replicas
#     until the first 2xx; BENCH_HA_FAILOVERS runs (the killed replica is started again as a
#     standby between runs), median and max (target: < 3 s).
#
# Writes $BUILD/bench/ha-results.txt (bench/run.sh appends it to results.txt) and the raw
# output to ha-bench.log. Afterwards it checks with ps that no kmsd or postgres it started is
# left running. Environment (defaults): BUILD=build BENCH_HA_SECONDS=5 BENCH_THREADS=2
# BENCH_CONNECTIONS=64 BENCH_HA_FAILOVERS=5 BENCH_SKIP_BUILD=0.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) B=$BUILD ;; *) B=$ROOT/$BUILD ;; esac
OUT=$B/bench
LOG=$OUT/ha-bench.log
TXT=$OUT/ha-results.txt
KMSD=$B/kmsd
PY=/usr/bin/python3 # Debian's python3 (the one on PATH may be another)

# ---- outside: a PostgreSQL cluster around the benchmark, and the orphan check after it -------
if [ "${KMSD_BENCH_HA_INNER:-}" != 1 ]; then
    mkdir -p "$OUT"
    : >"$LOG"
    if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
        cmake --build "$B" -j"$(nproc)" --target kmsd >>"$LOG" 2>&1 || {
            echo "bench/ha: build failed (see $LOG)" >&2
            exit 1
        }
    fi
    W=$(mktemp -d /tmp/kmsd-ha-bench-XXXXXX)
    KMSD_BENCH_HA_INNER=1 KMSD_BENCH_HA_WORK=$W "$PY" "$ROOT/tests/pg/pgtmp.py" run --fsync -- \
        "$0" "$@"
    rc=$?
    # nothing this run started may outlive it: kmsd (their configs are in $W) and postgres
    # (its data directory is the one pgtmp reported)
    pgdir=$(cat "$W/pgdir" 2>/dev/null)
    left=$(ps -eo pid=,args= | grep -F -e "$W/" ${pgdir:+-e "$pgdir/"} | grep -v grep)
    if [ -n "$left" ]; then
        printf 'bench/ha: processes left running:\n%s\n' "$left" | tee -a "$LOG" "$TXT" >&2
        rc=1
    else
        echo "no kmsd or postgres left running after the HA benchmark (checked with ps)" |
            tee -a "$LOG" "$TXT" >&2
    fi
    rm -rf "$W"
    exit $rc
fi

# ---- inside: KMS_TEST_PG_URL is the throwaway cluster ---------------------------------------
SECS=${BENCH_HA_SECONDS:-5}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-64}
NFAIL=${BENCH_HA_FAILOVERS:-5}
W=$KMSD_BENCH_HA_WORK
export BENCH_LUA_DIR=$ROOT/bench
sed -n 's/.*host=\([^ ]*\).*/\1/p' <<<"$KMS_TEST_PG_URL" >"$W/pgdir"

# progress to the caller's stderr (fd 3); everything else on stderr, such as the shell's notes
# on the replicas killed on purpose, to the log
exec 3>&2 2>>"$LOG"
say() { printf '%s\n' "$*" | tee -a "$LOG" >&3; }
die() { say "bench/ha: $*"; exit 1; }
for t in wrk curl; do command -v $t >/dev/null || die "$t is needed"; done

PIDS=()
cleanup() {
    for f in "$W"/*.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

head -c 32 /dev/urandom >"$W/seal.key"
chmod 600 "$W/seal.key"
mkdir -p "$W/lmdb"

# start NAME EXTRA-JSON: a kmsd with its config in $W/NAME.json; its pid in $W/NAME.pid and its
# URL in $W/NAME.url once it listens
start() {
    local name=$1 extra=$2 addr=""
    printf '{"listen_address": "127.0.0.1:0", "seal_key_file": "%s", "log_level": "warn",
 "rate_limit": 0, %s}\n' "$W/seal.key" "$extra" >"$W/$name.json"
    rm -f "$W/$name.url"
    [ -f "$W/$name.log" ] && cat "$W/$name.log" >>"$W/$name.earlier.log" # a restarted replica
    "$KMSD" server -config="$W/$name.json" >"$W/$name.log" 2>&1 &
    echo $! >"$W/$name.pid"
    for _ in $(seq 1 200); do
        addr=$(grep -o '"kmsd listening","address":"[^"]*"' "$W/$name.log" | sed 's/.*"address":"//; s/"$//')
        [ -n "$addr" ] && break
        kill -0 "$(cat "$W/$name.pid")" 2>/dev/null || break
        sleep 0.05
    done
    [ -n "$addr" ] || die "kmsd $name did not start: $(head -c 300 "$W/$name.log")"
    echo "http://$addr" >"$W/$name.url"
}
url() { cat "$W/$1.url"; }
REPLICAS=(r0 r1 r2)
PGCFG="\"storage\": \"postgresql\", \"postgresql_url\": \"$KMS_TEST_PG_URL\", \"ha_enabled\": true"
start_replica() { start "$1" "$PGCFG, \"ha_replica_id\": \"$1\""; }

# the replica that says it is active (sys/leader is_self), "" when none
active() {
    local r
    for r in "${REPLICAS[@]}"; do
        [ -f "$W/$r.url" ] && kill -0 "$(cat "$W/$r.pid")" 2>/dev/null || continue
        if curl -s -m 2 "$(url "$r")/v1/sys/leader" | grep -q '"is_self":true'; then
            echo "$r"
            return
        fi
    done
}
# wait until one replica is active and every live standby knows its address
settle() {
    local a="" r ok
    for _ in $(seq 1 400); do
        a=$(active)
        if [ -n "$a" ]; then
            ok=1
            for r in "${REPLICAS[@]}"; do
                [ "$r" = "$a" ] && continue
                curl -s -m 2 "$(url "$r")/v1/sys/leader" | grep -q "\"leader_address\":\"$(url "$a")\"" || ok=0
            done
            [ $ok = 1 ] && { echo "$a"; return 0; }
        fi
        sleep 0.05
    done
    die "no settled active replica within 20 s"
}

PT=a21zZC1iZW5jaC1wbGFpbnRleHQtNjQtYnl0ZXMtb2YtZGF0YS0wMTIzNDU2Nzg5YWJjZGVmZ2hpamtsbW5vcA==
api() { # URL METHOD PATH [BODY]: the body of the answer
    curl -s -m 10 -H "X-Vault-Token: $TOKEN" -X "$2" "$1/v1/$3" ${4:+-d "$4"}
}
setup_store() { # URL: init, transit, keys bench (encrypt/decrypt) and rot (rotation)
    TOKEN=$(curl -s -m 10 -X PUT "$1/v1/sys/init" -d '{}' | sed -n 's/.*"root_token":"\([^"]*\)".*/\1/p')
    [ -n "$TOKEN" ] || die "sys/init on $1 failed"
    api "$1" POST sys/mounts/transit '{"type":"transit"}' >/dev/null
    api "$1" POST transit/keys/bench '{}' >/dev/null
    api "$1" POST transit/keys/rot '{}' >/dev/null
    CT=$(api "$1" POST transit/encrypt/bench "{\"plaintext\":\"$PT\"}" | grep -o 'vault:v[0-9]*:[A-Za-z0-9+/=]*')
    [ -n "$CT" ] || die "the first encrypt on $1 failed"
}

# ---- wrk ------------------------------------------------------------------------------------
: >"$W/rows"
wrkrun() { # ID LABEL URL SCRIPT [ENV=VAL …]
    local id=$1 label=$2 u=$3 script=$4 out line
    shift 4
    out=$(env "$@" wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$BENCH_LUA_DIR/$script" "$u" 2>&1)
    printf '%s\n%s\n' "-- $id: $label" "$out" >>"$LOG"
    line=$(grep '^BENCH ' <<<"$out" | tail -1)
    [ -n "$line" ] || line="BENCH requests=0 rps=0 p50_us=0 p99_us=0 errors=1 non2xx=0"
    local rps p50 p99 err non2xx
    rps=$(sed 's/.*rps=\([0-9.]*\).*/\1/' <<<"$line")
    p50=$(sed 's/.*p50_us=\([0-9]*\).*/\1/' <<<"$line")
    p99=$(sed 's/.*p99_us=\([0-9]*\).*/\1/' <<<"$line")
    err=$(sed 's/.* errors=\([0-9]*\).*/\1/' <<<"$line")
    non2xx=$(sed 's/.*non2xx=\([0-9]*\).*/\1/' <<<"$line")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$label" "$rps" "$p50" "$p99" "$((err + non2xx))" >>"$W/rows"
    say "$(printf '  %-44s %8.0f req/s  p50 %6.2f ms  p99 %7.2f ms%s' "$label" "$rps" \
        "$(awk -v x="$p50" 'BEGIN{print x/1000}')" "$(awk -v x="$p99" 'BEGIN{print x/1000}')" \
        "$([ "$((err + non2xx))" -gt 0 ] && echo "  ERRORS $err socket, $non2xx non-2xx")")"
}
warm() { env "$@" wrk -t"$THREADS" -c"$CONNS" -d1s -s "$BENCH_LUA_DIR/$1" "$2" >/dev/null 2>&1; }

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
say "== HA benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ): $(nproc) cores, load $LOAD0 (shared machine: other work skews every figure)"
say "kmsd $($KMSD version) $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null); PostgreSQL 15 (fsync on, unix socket); wrk -t$THREADS -c$CONNS -d${SECS}s"

start lmdb "\"storage_path\": \"$W/lmdb\""
LURL=$(url lmdb)
setup_store "$LURL"
LTOKEN=$TOKEN LCT=$CT
for r in "${REPLICAS[@]}"; do start_replica "$r"; done
A=$(settle) || die "no active replica"
setup_store "$(url "$A")"
PTOKEN=$TOKEN PCT=$CT
S=$(for r in "${REPLICAS[@]}"; do [ "$r" != "$A" ] && echo "$r"; done | head -1)
AURL=$(url "$A")
SURL=$(url "$S")
say "active replica $A at $AURL, standby $S at $SURL; LMDB kmsd at $LURL"

# a leadership change during the throughput runs would measure forwarding instead: say so
NOTES=()
same_active() { # ID
    local now
    now=$(active)
    if [ "$now" != "$A" ]; then
        NOTES+=("the active replica changed from $A to ${now:-none} by the end of $1 (replica logs in $OUT/ha-logs)")
        say "  NOTE: the active replica changed from $A to ${now:-none} during $1"
        A=${now:-$A}
    fi
}

# encrypt/decrypt: LMDB and the active alternate, so drift in the machine's speed hits both
warm encrypt.lua "$LURL" BENCH_TOKEN="$LTOKEN"
warm encrypt.lua "$AURL" BENCH_TOKEN="$PTOKEN"
wrkrun lmdb_enc "encrypt 64B, LMDB" "$LURL" encrypt.lua BENCH_TOKEN="$LTOKEN"
wrkrun pg_enc "encrypt 64B, PostgreSQL active" "$AURL" encrypt.lua BENCH_TOKEN="$PTOKEN"
same_active pg_enc
wrkrun lmdb_dec "decrypt 64B, LMDB" "$LURL" decrypt.lua BENCH_TOKEN="$LTOKEN" BENCH_CIPHERTEXT="$LCT"
wrkrun pg_dec "decrypt 64B, PostgreSQL active" "$AURL" decrypt.lua BENCH_TOKEN="$PTOKEN" BENCH_CIPHERTEXT="$PCT"
same_active pg_dec
warm encrypt.lua "$SURL" BENCH_TOKEN="$PTOKEN"
wrkrun sb_enc "encrypt 64B, through a standby" "$SURL" encrypt.lua BENCH_TOKEN="$PTOKEN"
same_active sb_enc
wrkrun sb_dec "decrypt 64B, through a standby" "$SURL" decrypt.lua BENCH_TOKEN="$PTOKEN" BENCH_CIPHERTEXT="$PCT"
same_active sb_dec
# writes: every request is one committed write transaction
wrkrun lmdb_create "key creation, LMDB" "$LURL" create.lua BENCH_TOKEN="$LTOKEN" BENCH_KEY_PREFIX=l
wrkrun pg_create "key creation, PostgreSQL active" "$AURL" create.lua BENCH_TOKEN="$PTOKEN" BENCH_KEY_PREFIX=p
same_active pg_create
wrkrun lmdb_rotate "key rotation, LMDB" "$LURL" rotate.lua BENCH_TOKEN="$LTOKEN" BENCH_KEY=rot
wrkrun pg_rotate "key rotation, PostgreSQL active" "$AURL" rotate.lua BENCH_TOKEN="$PTOKEN" BENCH_KEY=rot
same_active pg_rotate
kill -TERM "$(cat "$W/lmdb.pid")" 2>/dev/null

# ---- failover ---------------------------------------------------------------------------------
say "-- failover: kill -9 of the active, first 2xx encrypt from a surviving replica ($NFAIL runs)"
FAILS=()
for i in $(seq 1 "$NFAIL"); do
    A=$(settle) || die "failover run $i: no active replica"
    api "$(url "$A")" POST transit/encrypt/bench "{\"plaintext\":\"$PT\"}" | grep -q ciphertext ||
        die "failover run $i: no encrypt before the kill"
    survivors=()
    for r in "${REPLICAS[@]}"; do [ "$r" != "$A" ] && survivors+=("$(url "$r")"); done
    t0=$(date +%s%N)
    kill -KILL "$(cat "$W/$A.pid")"
    t1=""
    n=0
    while [ -z "$t1" ]; do
        u=${survivors[$((n % ${#survivors[@]}))]}
        n=$((n + 1))
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 1 -H "X-Vault-Token: $PTOKEN" \
            -X POST "$u/v1/transit/encrypt/bench" -d "{\"plaintext\":\"$PT\"}")
        case "$code" in 2??) t1=$(date +%s%N) ;; esac
        [ $(($(date +%s%N) - t0)) -gt 30000000000 ] && die "failover run $i: no 2xx within 30 s"
    done
    ms=$(((t1 - t0) / 1000000))
    FAILS+=("$ms")
    wait "$(cat "$W/$A.pid")" 2>/dev/null
    say "  run $i: killed $A, first 2xx after $ms ms ($n requests)"
    start_replica "$A" # back as a standby for the next run
done
read -r FMED FMAX <<<"$(printf '%s\n' "${FAILS[@]}" | sort -n | awk '{v[NR] = $1} END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[NR] }')"
for r in "${REPLICAS[@]}"; do kill -TERM "$(cat "$W/$r.pid")" 2>/dev/null; done
wait 2>/dev/null
rm -f "$W"/*.pid
mkdir -p "$OUT/ha-logs"
cp "$W"/*.log "$OUT/ha-logs/" 2>/dev/null

# ---- table ------------------------------------------------------------------------------------
col() { awk -F'\t' -v id="$1" -v c="$2" '$1 == id { print $c }' "$W/rows"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
{
    echo
    echo "== HA on PostgreSQL ($(nproc) cores shared by wrk, 3 replicas, the LMDB kmsd and PostgreSQL; load $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end)"
    printf '%-44s %10s %9s %9s %6s  %-26s %s\n' scenario req/s p50 p99 ratio target result
    while IFS=$'\t' read -r id label rps p50 p99 errs; do
        x="" target="" result="-"
        case "$id" in
        pg_enc | pg_dec)
            x=$(ratio "$rps" "$(col "lmdb_${id#pg_}" 3)")
            target=">= 0.90 x LMDB"
            ge "$x" 0.9 && result=PASS || result=MISS
            ;;
        sb_enc | sb_dec)
            x=$(ratio "$rps" "$(col "pg_${id#sb_}" 3)")
            target="(info: x the active)"
            ;;
        pg_create | pg_rotate)
            x=$(ratio "$rps" "$(col "lmdb_${id#pg_}" 3)")
            target="(info: x LMDB)"
            ;;
        esac
        [ "${errs:-0}" -gt 0 ] && result="$result (ERRORS: $errs)"
        printf '%-44s %10.0f %7.2fms %7.2fms %6s  %-26s %s\n' "$label" "$rps" \
            "$(awk -v v="$p50" 'BEGIN{print v/1000}')" "$(awk -v v="$p99" 'BEGIN{print v/1000}')" \
            "$x" "$target" "$result"
    done <"$W/rows"
    res=MISS
    awk -v m="$FMAX" 'BEGIN { exit !(m < 3000) }' && res=PASS
    printf '%-44s %10s %9s %9s %6s  %-26s %s\n' "failover after kill -9 ($NFAIL runs)" "" \
        "med ${FMED}ms" "max ${FMAX}ms" "" "< 3 s (max)" "$res"
    echo "(failover runs, ms: ${FAILS[*]}; lease 2 s, heartbeat 500 ms: a new active waits out the old lease)"
    for n in "${NOTES[@]+"${NOTES[@]}"}"; do echo "note: $n"; done
} | tee "$TXT" | tee -a "$LOG"
