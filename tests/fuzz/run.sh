#!/usr/bin/env bash
# Build the libFuzzer targets with clang and run each for SECONDS (default 20) on its corpus.
# Used by `make fuzz` (long runs) and `make test` (FUZZ_SECONDS=5). Exits non-zero on a crash;
# the crashing input is left in build-fuzz/fuzz/crash-* for a regression test.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER=${FUZZ_SECONDS:-20}
BUILD=${FUZZ_BUILD:-build-fuzz}
CC=clang cmake -S . -B "$BUILD" -DKMS_BUILD_FUZZERS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target fuzz_b64 fuzz_ciphertext fuzz_request fuzz_config fuzz_jwt fuzz_policy fuzz_yaml fuzz_http fuzz_grpc fuzz_jsonbody >/dev/null
status=0
for name in fuzz_b64 fuzz_ciphertext fuzz_request fuzz_config fuzz_jwt fuzz_policy fuzz_yaml fuzz_http fuzz_grpc fuzz_jsonbody; do
  f="$BUILD/fuzz/$name"
  # every input that once crashed a target is replayed first
  for r in tests/fuzz/regress/"$name"-*; do
    [ -e "$r" ] || continue
    if ! ASAN_OPTIONS=detect_leaks=0 "$f" "$r" >"$BUILD/fuzz/$name.regress.log" 2>&1; then
      echo "fuzz $name: regression $r FAILED"; tail -30 "$BUILD/fuzz/$name.regress.log"; status=1
    fi
  done
  corpus="tests/fuzz/corpus/$name"
  work=$(mktemp -d)
  cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  dict=""
  [ -f "tests/fuzz/${name#fuzz_}.dict" ] && dict="-dict=$PWD/tests/fuzz/${name#fuzz_}.dict"
  [ -f "tests/fuzz/$name.dict" ] && dict="-dict=$PWD/tests/fuzz/$name.dict"
  log="$BUILD/fuzz/$name.log"
  if (cd "$BUILD/fuzz" && ASAN_OPTIONS=detect_leaks=0 "./$name" -max_total_time="$SECONDS_PER" \
        -max_len=4096 -timeout=10 $dict "$work" >"$name.log" 2>&1); then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    [ -z "$execs" ] && execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
    echo "fuzz $name: ok, ${execs:-?} execs in ${SECONDS_PER}s"
  else
    echo "fuzz $name: FAILED (see $log)"; tail -30 "$log"; status=1
  fi
  rm -rf "$work"
done
exit $status
