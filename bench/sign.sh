#!/usr/bin/env bash
# sign.sh - the signing part of `make bench` (also `make bench-sign` alone, about 40 s):
# ed25519 and ecdsa-p256 sign and verify per second through kmsd's API pipeline in process
# (kmsd-apibench -op=sign|verify: token check, routing, parameters, key cache, OpenSSL,
# response envelope; one thread, no HTTP), one item per request and batches of 100, next to
# `openssl speed` for the same algorithms run in the same invocation, with the ratio
# kmsd items per CPU second : openssl ops per CPU second (openssl speed divides by the user CPU
# time it used, so the figures hold up when other processes share the cores; issue 13's
# target: >= 0.70 for batches).
#
# Writes $BUILD/bench/sign-results.txt (and appends the raw lines to sign-bench.log).
# Environment: BUILD=build  BENCH_SIGN_SECONDS=3  BENCH_SKIP_BUILD=0
#   BENCH_SIGN_CALLGRIND=0 (1: also the load-independent instruction-count ratio, ~2 minutes)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) B=$BUILD ;; *) B=$ROOT/$BUILD ;; esac
SECS=${BENCH_SIGN_SECONDS:-3}
OUT=$B/bench
LOG=$OUT/sign-bench.log
TXT=$OUT/sign-results.txt
APIBENCH=$B/bench/kmsd-apibench
mkdir -p "$OUT"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    cmake --build "$B" -j"$(nproc)" --target kmsd-apibench >>"$LOG" 2>&1 || {
        echo "sign.sh: build failed (see $LOG)" >&2
        exit 1
    }
fi
command -v openssl >/dev/null || {
    echo "sign.sh: openssl (the command) is missing" >&2
    exit 1
}

# openssl speed: "sign/s verify/s" columns of its ecdsa (nistp256) and EdDSA (Ed25519) rows
echo "== $(date -u +%FT%TZ) openssl speed -seconds $SECS ed25519 ecdsap256" >>"$LOG"
SPEED=$(openssl speed -seconds "$SECS" ed25519 ecdsap256 2>>"$LOG")
echo "$SPEED" >>"$LOG"
ossl() { # ROW-PATTERN COLUMN(1 sign, 2 verify)
    awk -v pat="$1" -v c="$2" 'index($0, pat) { print $(NF - 2 + c) }' <<<"$SPEED" | tail -1
}
OSSL_ED_SIGN=$(ossl "(Ed25519)" 1)
OSSL_ED_VERIFY=$(ossl "(Ed25519)" 2)
OSSL_P256_SIGN=$(ossl "(nistp256)" 1)
OSSL_P256_VERIFY=$(ossl "(nistp256)" 2)

rows=()
fails=0
for type in ed25519 ecdsa-p256; do
    for op in sign verify; do
        for batch in 1 100; do
            # openssl speed divides by the user CPU time it used (not wall time: see -elapsed);
            # kmsd's figure is made comparable the same way: items over the process's CPU time
            TIMEFORMAT='%U %S'
            cpu=$({ time "$APIBENCH" -op="$op" -type="$type" -batch="$batch" -seconds="$SECS" \
                >"$OUT/sign-line.txt" 2>>"$LOG"; } 2>&1)
            line=$(cat "$OUT/sign-line.txt")
            echo "$line cpu_user_sys=$cpu" >>"$LOG"
            wall=$(sed -n 's/.*items_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
            ips=$(awk -v l="$line" -v c="$cpu" 'BEGIN {
                n = split(l, f, " "); req = 0; b = 0
                for (i = 1; i <= n; i++) {
                    if (f[i] ~ /^requests=/) { sub(/^requests=/, "", f[i]); req = f[i] }
                    if (f[i] ~ /^batch=/) { sub(/^batch=/, "", f[i]); b = f[i] }
                }
                split(c, t, " "); s = t[1] + t[2]
                if (req > 0 && s > 0) printf "%.0f", req * b / s }')
            case "$type/$op" in
            ed25519/sign) ref=$OSSL_ED_SIGN ;;
            ed25519/verify) ref=$OSSL_ED_VERIFY ;;
            ecdsa-p256/sign) ref=$OSSL_P256_SIGN ;;
            *) ref=$OSSL_P256_VERIFY ;;
            esac
            if [ -z "$ips" ] || [ -z "$ref" ]; then
                rows+=("$(printf '%-11s %-7s %6s  %s' "$type" "$op" "$batch" "FAILED (see $LOG)")")
                fails=$((fails + 1))
                continue
            fi
            ratio=$(awk -v a="$ips" -v b="$ref" 'BEGIN { printf "%.2f", a / b }')
            target="-"
            if [ "$batch" -gt 1 ]; then
                awk -v r="$ratio" 'BEGIN { exit !(r >= 0.7) }' && target="PASS (>= 0.70)" ||
                    target="MISS (>= 0.70)"
            fi
            rows+=("$(printf '%-11s %-7s %6s %12.0f %12.0f %12.0f %6s  %s' "$type" "$op" "$batch" \
                "$wall" "$ips" "$ref" "$ratio" "$target")")
        done
    done
done

{
    echo
    echo "== signatures: kmsd's API pipeline in process (one thread) vs openssl speed (-seconds $SECS, one thread), same run"
    echo "   $(nproc) cores: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo); load average before: $LOAD0"
    echo "   per second of CPU time on both sides (openssl speed's own divisor); kmsd's wall-clock figure beside"
    printf '%-11s %-7s %6s %12s %12s %12s %6s  %s\n' type op batch "kmsd wall/s" "kmsd cpu/s" \
        "openssl /s" ratio target
    for r in "${rows[@]}"; do echo "$r"; done
    echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "${BENCH_SIGN_CALLGRIND:-0}" = 1 ] && command -v valgrind >/dev/null; then
        # load-independent: instructions of OpenSSL's own call per item / the whole pipeline's
        echo "   instruction counts (callgrind; OpenSSL's sign/verify call per item / kms_api_handle per item):"
        for type in ed25519 ecdsa-p256; do
            for op in sign verify; do
                for batch in 1 100; do
                    reqs=$([ "$batch" = 1 ] && echo 200 || echo 5)
                    valgrind --tool=callgrind --callgrind-out-file="$OUT/sign-cg.out" "$APIBENCH" \
                        -op="$op" -type="$type" -batch="$batch" -requests="$reqs" >/dev/null 2>>"$LOG"
                    callgrind_annotate --inclusive=yes "$OUT/sign-cg.out" 2>/dev/null | awk \
                        -v t="$type" -v op="$op" -v b="$batch" -v n=$(((reqs + 1) * batch)) '
                        /dispatch.c:kms_api_handle / { gsub(",", "", $1); h = $1 }
                        /[?]:EVP_(DigestSign|PKEY_sign|DigestVerify|PKEY_verify) \[/ { gsub(",", "", $1); c = $1 }
                        END { if (h > 0) printf "   %-11s %-7s %6s %10.0f /item in OpenSSL of %10.0f  ratio %.2f\n", t, op, b, c / n, h / n, c / h }'
                done
            done
        done
        rm -f "$OUT/sign-cg.out"
    fi
} >"$TXT.tmp"
mv "$TXT.tmp" "$TXT"
cat "$TXT"
[ "$fails" -eq 0 ]
