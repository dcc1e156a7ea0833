#!/usr/bin/env bash
# Check that every tracked .c/.h file is formatted as .clang-format says (house style 23).
# Lists the files that are not and exits 1; `FIX=1 scripts/check-format.sh` rewrites them.
# Uses Debian 12's clang-format-14 (package clang-format-14, pulled in by `make lint`), so that
# everyone formats with the same version; CLANG_FORMAT=... picks another binary.
set -euo pipefail
cd "$(dirname "$0")/.."

CF=${CLANG_FORMAT:-}
if [ -z "$CF" ]; then
  for c in clang-format-14 clang-format; do
    if command -v "$c" >/dev/null 2>&1; then CF=$c; break; fi
  done
fi
if [ -z "$CF" ]; then
  echo "check-format: clang-format-14 not found (apt-get install clang-format-14)" >&2
  exit 2
fi

mapfile -t files < <(git ls-files -- '*.c' '*.h')
bad=()
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  if [ "${FIX:-0}" = 1 ]; then
    "$CF" -i --style=file "$f"
  elif ! "$CF" --style=file --dry-run -Werror "$f" >/dev/null 2>&1; then
    bad+=("$f")
  fi
done

if [ ${#bad[@]} -gt 0 ]; then
  echo "check-format: ${#bad[@]} of ${#files[@]} files are not formatted ($CF):"
  printf '  %s\n' "${bad[@]}"
  echo "  see the changes with: $CF --style=file <file> | diff -u <file> -"
  exit 1
fi
echo "check-format: ${#files[@]} files formatted ($($CF --version | grep -o '[0-9][0-9.]*' | head -1))"
