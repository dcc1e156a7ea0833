#!/usr/bin/env bash
# Install a build into a fresh temporary prefix and check the layout of cmake/Install.cmake.
# Usage: scripts/check-install.sh <build dir>   (the ctest test install_layout)
set -euo pipefail
build=${1:?usage: check-install.sh <build dir>}
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT

cmake --install "$build" --prefix "$prefix" >"$prefix.log" 2>&1 || {
  cat "$prefix.log"; rm -f "$prefix.log"; exit 1; }
rm -f "$prefix.log"

# GNUInstallDirs as configured for this build (bin, share/doc/kmsd unless overridden)
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
bindir=$(cache CMAKE_INSTALL_BINDIR); bindir=${bindir:-bin}
docdir=$(cache CMAKE_INSTALL_DOCDIR); docdir=${docdir:-share/doc/kmsd}
unitdir=$(cache KMS_INSTALL_SYSTEMDUNITDIR)
sysusersdir=$(cache KMS_INSTALL_SYSUSERSDIR)

expect=("$bindir/kmsd" "$bindir/kmsctl" "$unitdir/kmsd.service" "$sysusersdir/kmsd.conf"
        "$docdir/README.md" "$docdir/examples/kmsd.json" "$docdir/examples/kmsd.logrotate")
for d in "$src"/docs/*.md; do expect+=("$docdir/$(basename "$d")"); done

fail=0
for p in "${expect[@]}"; do
  if [ ! -f "$prefix/$p" ]; then echo "install_layout: missing $p"; fail=1; fi
done
for b in kmsd kmsctl; do
  [ -x "$prefix/$bindir/$b" ] || { echo "install_layout: $bindir/$b not executable"; fail=1; }
done
grep -q "^ExecStart=.*/kmsd server" "$prefix/$unitdir/kmsd.service" ||
  { echo "install_layout: kmsd.service has no ExecStart"; fail=1; }
# the unit runs the binary this install put in place, whatever --prefix said (it named the
# configured /usr/local/bin/kmsd after `cmake --install build --prefix /usr`)
case $bindir in /*) want_bin=$bindir/kmsd ;; *) want_bin=$prefix/$bindir/kmsd ;; esac
grep -q "^ExecStart=$want_bin server" "$prefix/$unitdir/kmsd.service" ||
  { echo "install_layout: kmsd.service does not start $want_bin:"
    grep "^ExecStart=" "$prefix/$unitdir/kmsd.service"; fail=1; }
# nothing else: every installed file is one we expect
extra=$(cd "$prefix" && find . -type f | sed 's|^\./||' | sort |
        comm -23 - <(printf '%s\n' "${expect[@]}" | sort))
if [ -n "$extra" ]; then echo "install_layout: unexpected files:"; echo "$extra"; fail=1; fi
[ $fail = 0 ] && echo "install_layout: ${#expect[@]} files in place"
exit $fail
