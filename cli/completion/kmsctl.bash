# bash completion for kmsctl (source it, or install as
# /usr/share/bash-completion/completions/kmsctl). Keep in step with `kmsctl help <command>`:
# tests/integration/test_kmsctl_cli.py checks that every command, verb and option is here.

_kmsctl()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local commands="orgs keys encrypt decrypt envelope apply get patch login audit version help"
    local globals="--addr --token --namespace -n --project --output -o --ca-cert --ca-path
                   --client-cert --client-key --tls-skip-verify --help -h"
    local keys_verbs="list describe get create rotate set-min-decryption-version
                      schedule-delete cancel-delete delete"
    local orgs_verbs="create list describe get delete"

    case $prev in
        -o|--output)
            COMPREPLY=($(compgen -W "table json yaml" -- "$cur")); return ;;
        --purpose)
            COMPREPLY=($(compgen -W "application etcd backup" -- "$cur")); return ;;
        --algorithm)
            COMPREPLY=($(compgen -W "aes256-gcm96 chacha20-poly1305" -- "$cur")); return ;;
        --deletion-policy)
            COMPREPLY=($(compgen -W "retain schedule" -- "$cur")); return ;;
        --method)
            COMPREPLY=($(compgen -W "kubernetes jwt" -- "$cur")); return ;;
        --result)
            COMPREPLY=($(compgen -W "allowed denied error" -- "$cur")); return ;;
        -f|--filename|--in|--out|--meta|--plaintext-file|--ciphertext-file|--jwt-file|\
        --token-file|--ca-cert|--client-cert|--client-key|--file)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --ca-path)
            COMPREPLY=($(compgen -d -- "$cur")); return ;;
    esac

    # the command and its verb: the first words that are not options or option values
    local cmd="" verb="" i w
    for ((i = 1; i < cword; i++)); do
        w=${words[i]}
        case $w in
            --addr|--token|--namespace|-n|--project|--output|-o|--ca-cert|--ca-path|\
            --client-cert|--client-key) ((i++)); continue ;;
            -*) continue ;;
        esac
        if [[ -z $cmd ]]; then cmd=$w; elif [[ -z $verb ]]; then verb=$w; fi
    done

    local opts=""
    case $cmd in
        "") COMPREPLY=($(compgen -W "$commands $globals" -- "$cur")); return ;;
        help) COMPREPLY=($(compgen -W "$commands" -- "$cur")); return ;;
        orgs)
            if [[ -z $verb ]]; then
                COMPREPLY=($(compgen -W "$orgs_verbs" -- "$cur")); return
            fi
            [[ $verb == delete ]] && opts="--yes" ;;
        keys)
            if [[ -z $verb ]]; then
                COMPREPLY=($(compgen -W "$keys_verbs" -- "$cur")); return
            fi
            case $verb in
                create) opts="--purpose --algorithm --rotation --enable-rotation --deletion-policy" ;;
                delete) opts="--yes" ;;
            esac ;;
        encrypt) opts="--plaintext --plaintext-file --context --out" ;;
        decrypt) opts="--ciphertext --ciphertext-file --context --out" ;;
        envelope)
            if [[ -z $verb ]]; then
                COMPREPLY=($(compgen -W "encrypt decrypt" -- "$cur")); return
            fi
            opts="--in --out --meta --no-progress" ;;
        apply) opts="-f --filename" ;;
        get)
            if [[ -z $verb ]]; then
                COMPREPLY=($(compgen -W "kmskey kmskeys kkey" -- "$cur")); return
            fi ;;
        patch) opts="-p --patch --patch-file --type" ;;
        login) opts="--method --mount --role --jwt --jwt-file --token-file --no-store" ;;
        audit)
            if [[ -z $verb ]]; then
                COMPREPLY=($(compgen -W "verify list" -- "$cur")); return
            fi
            case $verb in
                list) opts="--resource --key --project --op --subject --result --namespace
                            --since --until --limit --output --file" ;;
                verify) opts="--genesis --anchor -q"
                        COMPREPLY=($(compgen -f -- "$cur")) ;;
            esac ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY+=($(compgen -W "$opts $globals" -- "$cur"))
    fi
}
complete -F _kmsctl kmsctl
