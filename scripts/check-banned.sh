#!/usr/bin/env bash
# Fail when a tracked C source calls a banned function (house style 23): they overflow, lose
# errors or keep hidden state. Use snprintf/vsnprintf, memcpy with an explicit length,
# strtok_r (or a hand-written split), and kms_int_parse (crypto.h) or strtol/strtoull with
# end and range checks. Comments that name one without calling it are fine.
set -euo pipefail
cd "$(dirname "$0")/.."

BANNED='sprintf|vsprintf|strcpy|strcat|strncpy|strtok|atoi|atol|atoll|sscanf|gets'
# A call is the whole word (not after an identifier character, "." or "->") then "(", spaces
# allowed: "strcpy (" counts, "snprintf(", "my_atoi(" and "s->gets(" do not.
PATTERN="(^|[^[:alnum:]_.>])($BANNED)[[:space:]]*\("

mapfile -t files < <(git ls-files -- '*.c' '*.h')
[ ${#files[@]} -gt 0 ] || { echo "check-banned: no sources"; exit 0; }
if hits=$(grep -nE "$PATTERN" -- "${files[@]}"); then
  echo "check-banned: banned functions used:"
  printf '%s\n' "$hits" | sed 's/^/  /'
  exit 1
fi
echo "check-banned: ${#files[@]} files, none of: ${BANNED//|/ }"
