#!/bin/sh
# gen-man.sh KMSCTL KMSD OUTDIR VERSION: write OUTDIR/kmsctl.1 and OUTDIR/kmsd.8 from the help
# text the binaries print (`kmsctl help`, `kmsctl help <command>`, `kmsd help`), so the man
# pages never say something the programs do not. Run at build time (cli/CMakeLists.txt).
set -eu
kmsctl=$1
kmsd=$2
out=$3
version=${4:-0.1.0}
mkdir -p "$out"

# help text -> roff: backslashes doubled, lines that would start a request escaped
roff_text() {
    sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}

commands=$("$kmsctl" help | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && NF { print $1 }')

{
    printf '.TH KMSCTL 1 "" "kmsctl %s" "User Commands"\n' "$version"
    printf '.SH NAME\nkmsctl \\- client of kmsd, the key management service (KMSKeys, encrypt, envelope, audit)\n'
    printf '.SH SYNOPSIS\n.B kmsctl\n.I command\n.RI [ options ]\n'
    printf '.SH DESCRIPTION\n.nf\n'
    "$kmsctl" help | roff_text
    printf '.fi\n.SH COMMANDS\n'
    for c in $commands; do
        [ "$c" = version ] && continue
        printf '.SS %s\n.nf\n' "$c"
        "$kmsctl" help "$c" | roff_text
        printf '.fi\n'
    done
    printf '.SH EXIT STATUS\n0 success, 1 the server (or the data) said no, 2 usage.\n'
    printf '.SH SEE ALSO\n.BR kmsd (8)\n'
} > "$out/kmsctl.1"

{
    printf '.TH KMSD 8 "" "kmsd %s" "System Administration"\n' "$version"
    printf '.SH NAME\nkmsd \\- key management service (OpenBao/Vault Transit API compatible)\n'
    printf '.SH SYNOPSIS\n.B kmsd server\n.RI [ options ]\n.br\n.B kmsd audit verify\n.IR FILE | DIR ...\n.br\n.B kmsd version\n'
    printf '.SH DESCRIPTION\n.nf\n'
    "$kmsd" help | roff_text
    printf '.fi\n.SH SEE ALSO\n.BR kmsctl (1)\n'
} > "$out/kmsd.8"
