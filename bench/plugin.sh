#!/usr/bin/env bash
# plugin.sh - the KMS v2 plugin part of `make bench` (also on its own: bench/plugin.sh).
#
# One kmsd (config mode, fsync'd store, audit off, rate limit off) serves the HTTP API and a
# plugin socket for Transit key `plugin-k`; a sidecar (`kmsd kms-plugin`) serves a second socket
# in front of it, over HTTP and over HTTPS. kmsd-pluginbench drives Encrypt and Decrypt calls
# (C connections x D calls in flight, libnghttp2 client) and, for latency, one call at a time;
# wrk drives the HTTP encrypt of 32 bytes on the same server for the ratio.
#
# Prints a table (scenario, calls/s, p50, p99, ratio to HTTP encrypt, target) and writes it to
# $BUILD/bench/plugin-results.txt. Environment: BUILD=build BENCH_PLUGIN_SECONDS=5
# BENCH_PLUGIN_CONNS=4 BENCH_PLUGIN_DEPTH=16 BENCH_THREADS=2 BENCH_CONNECTIONS=64
# BENCH_SKIP_BUILD=0.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) B=$BUILD ;; *) B=$ROOT/$BUILD ;; esac
SECS=${BENCH_PLUGIN_SECONDS:-5}
PCONNS=${BENCH_PLUGIN_CONNS:-4}
PDEPTH=${BENCH_PLUGIN_DEPTH:-16}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNECTIONS:-64}
OUT=$B/bench
W=$(mktemp -d /tmp/kmsd-plugin-bench-XXXXXX)
LOG=$OUT/plugin-bench.log
TXT=$OUT/plugin-results.txt
KMSD=$B/kmsd
PB=$B/bench/kmsd-pluginbench
mkdir -p "$OUT"
: >"$LOG"

say() { printf '%s\n' "$*" | tee -a "$LOG" >&2; }
die() { say "bench/plugin: $*"; exit 1; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    cmake --build "$B" -j"$(nproc)" --target kmsd kmsd-pluginbench >>"$LOG" 2>&1 ||
        die "build failed (see $LOG)"
fi
for t in wrk curl openssl; do command -v $t >/dev/null || die "$t is needed"; done

PIDS=()
cleanup() {
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$p" 2>/dev/null; done
    # start_kmsd runs in a command substitution: its servers' ids are in pid files
    for f in "$W"/*.pid; do [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$W/tls.key" -out "$W/tls.crt" >>"$LOG" 2>&1 || die "openssl failed"
chmod 600 "$W/tls.key"
head -c 32 /dev/urandom >"$W/seal.key"
chmod 600 "$W/seal.key"
mkdir -p "$W/store"

# kmsd: HTTP on a port it picks (read back from its log), HTTPS likewise, one plugin socket
start_kmsd() { # NAME TLS(0/1) -> URL on stdout
    local name=$1 tls=$2
    {
        printf '{"listen_address": "127.0.0.1:0", "storage_path": "%s", "seal_key_file": "%s",\n' \
            "$W/store" "$W/seal.key"
        printf ' "log_level": "warn", "rate_limit": 0'
        [ "$tls" = 1 ] && printf ', "tls_cert_file": "%s", "tls_key_file": "%s"' "$W/tls.crt" "$W/tls.key"
        [ "$tls" = 0 ] && printf ', "kms_plugins": [{"socket": "%s", "key": "plugin-k"}]' "$W/inproc.sock"
        printf '}\n'
    } >"$W/$name.json"
    "$KMSD" server -config="$W/$name.json" >"$W/$name.log" 2>&1 &
    echo $! >"$W/$name.pid" # PIDS+= would be lost: callers run this in $(...)
    local addr=""
    for _ in $(seq 1 100); do
        addr=$(grep -o '"kmsd listening","address":"[^"]*"' "$W/$name.log" | sed 's/.*"address":"//; s/"$//')
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || die "kmsd $name did not start: $(head -c 300 "$W/$name.log")"
    if [ "$tls" = 1 ]; then echo "https://$addr"; else echo "http://$addr"; fi
}
URL=$(start_kmsd http 0)
TOKEN=$(curl -s -X PUT "$URL/v1/sys/init" -d '{}' | sed 's/.*"root_token":"\([^"]*\)".*/\1/')
[ -n "$TOKEN" ] || die "init failed"
curl -s -o /dev/null -H "X-Vault-Token: $TOKEN" -X POST "$URL/v1/sys/mounts/transit" -d '{"type":"transit"}'
curl -s -o /dev/null -H "X-Vault-Token: $TOKEN" -X POST "$URL/v1/transit/keys/plugin-k" -d '{}'
printf '%s' "$TOKEN" >"$W/token"
chmod 600 "$W/token"
# the same store over HTTPS for the TLS sidecar: a second kmsd cannot share LMDB, so this one
# serves HTTPS only after the HTTP scenarios (see below)

start_sidecar() { # NAME ADDR EXTRA…
    local name=$1 addr=$2
    shift 2
    "$KMSD" kms-plugin -listen="unix://$W/$name.sock" -addr="$addr" -key=plugin-k \
        -vault-token-file="$W/token" "$@" >"$W/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        [ -S "$W/$name.sock" ] && return 0
        sleep 0.05
    done
    die "sidecar $name did not start: $(head -c 300 "$W/$name.log")"
}

: >"$W/rows"
pbrun() { # ID LABEL SOCKET OP CONNS DEPTH
    local line
    line=$("$PB" -socket="$3" -op="$4" -seconds="$SECS" -conns="$5" -depth="$6" 2>>"$LOG")
    printf '%s\n%s\n' "-- $1: $2" "$line" >>"$LOG"
    [ -n "$line" ] || line="BENCH calls=0 rps=0 p50_us=0 p99_us=0 errors=1"
    local rps p50 p99 err
    rps=$(sed 's/.*rps=\([0-9.]*\).*/\1/' <<<"$line")
    p50=$(sed 's/.*p50_us=\([0-9]*\).*/\1/' <<<"$line")
    p99=$(sed 's/.*p99_us=\([0-9]*\).*/\1/' <<<"$line")
    err=$(sed 's/.*errors=\([0-9]*\).*/\1/' <<<"$line")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$rps" "$p50" "$p99" "$err" >>"$W/rows"
    say "$(printf '  %-46s %8.0f calls/s  p50 %6.3f ms  p99 %6.3f ms%s' "$2" "$rps" \
        "$(awk -v x="$p50" 'BEGIN{print x/1000}')" "$(awk -v x="$p99" 'BEGIN{print x/1000}')" \
        "$([ "$err" != 0 ] && echo "  ERRORS $err")")"
}

say "== KMS plugin benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ): $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: other work skews every figure)"
say "kmsd-pluginbench: $PCONNS connections x $PDEPTH calls in flight, ${SECS}s; latency rows: 1 x 1"

# HTTP encrypt on the same server, 32-byte plaintext like a DEK seed (wrk, encrypt.lua)
export BENCH_LUA_DIR=$ROOT/bench
env BENCH_TOKEN="$TOKEN" BENCH_KEY=plugin-k wrk -t"$THREADS" -c"$CONNS" -d2s -s "$BENCH_LUA_DIR/encrypt.lua" "$URL" >/dev/null 2>&1
HTTP=$(env BENCH_TOKEN="$TOKEN" BENCH_KEY=plugin-k wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency \
    -s "$BENCH_LUA_DIR/encrypt.lua" "$URL" 2>&1 | grep '^BENCH ' | tail -1)
HTTP_RPS=$(sed 's/.*rps=\([0-9.]*\).*/\1/' <<<"$HTTP")
HTTP_P99=$(sed 's/.*p99_us=\([0-9]*\).*/\1/' <<<"$HTTP")
say "$(printf '  %-46s %8.0f req/s    p99 %6.3f ms (wrk -t%s -c%s)' "HTTP encrypt 64B (the reference)" \
    "${HTTP_RPS:-0}" "$(awk -v x="${HTTP_P99:-0}" 'BEGIN{print x/1000}')" "$THREADS" "$CONNS")"

S=$W/inproc.sock
"$PB" -socket="$S" -op=decrypt -seconds=1 -conns="$PCONNS" -depth="$PDEPTH" >/dev/null 2>&1 # warm-up
pbrun inproc_dec "in-process Decrypt" "$S" decrypt "$PCONNS" "$PDEPTH"
pbrun inproc_enc "in-process Encrypt" "$S" encrypt "$PCONNS" "$PDEPTH"
pbrun inproc_dec_lat "in-process Decrypt, one at a time" "$S" decrypt 1 1
pbrun inproc_status "in-process Status (cached probe)" "$S" status "$PCONNS" "$PDEPTH"

start_sidecar side-http "$URL"
pbrun side_dec "sidecar Decrypt (http remote)" "$W/side-http.sock" decrypt "$PCONNS" "$PDEPTH"
pbrun side_enc "sidecar Encrypt (http remote)" "$W/side-http.sock" encrypt "$PCONNS" "$PDEPTH"
pbrun side_dec_lat "sidecar Decrypt, one at a time (http)" "$W/side-http.sock" decrypt 1 1

# HTTPS: restart kmsd on the same store with TLS
hpid=$(cat "$W/http.pid")
kill -TERM "$hpid"
for _ in $(seq 1 300); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$hpid" 2>/dev/null && die "kmsd http did not stop"
rm -f "$W/http.pid"
TURL=$(start_kmsd https 1)
start_sidecar side-https "$TURL" -ca-cert="$W/tls.crt"
pbrun side_tls_dec "sidecar Decrypt (https remote)" "$W/side-https.sock" decrypt "$PCONNS" "$PDEPTH"
pbrun side_tls_dec_lat "sidecar Decrypt, one at a time (https)" "$W/side-https.sock" decrypt 1 1

{
    echo
    echo "== KMS plugin results ($(nproc) cores, shared with other work; HTTP encrypt reference ${HTTP_RPS:-0} req/s)"
    printf '%-46s %10s %9s %9s %7s  %-24s %s\n' scenario calls/s p50 p99 xhttp target result
    while IFS=$'\t' read -r id label rps p50 p99 err; do
        x=$(awk -v a="$rps" -v b="${HTTP_RPS:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        target=""
        result="-"
        if [ "$id" = inproc_dec ]; then
            target=">= 20000 calls/s"
            awk -v a="$rps" 'BEGIN { exit !(a >= 20000) }' && result=PASS || result=MISS
        fi
        [ "$err" != 0 ] && result="$result (ERRORS: $err)"
        printf '%-46s %10.0f %7.3fms %7.3fms %7s  %-24s %s\n' "$label" "$rps" \
            "$(awk -v v="$p50" 'BEGIN{print v/1000}')" "$(awk -v v="$p99" 'BEGIN{print v/1000}')" \
            "$x" "$target" "$result"
    done <"$W/rows"
    echo "(the sidecar keeps its connections to the key service open: one per call in flight, reused)"
} | tee "$TXT" | tee -a "$LOG"
