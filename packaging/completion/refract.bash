# bash completion for refract(8): commands, each command's flags, the
# values of --proto and --firewall, and file names where a flag or argument
# takes a path. Self-contained (uses only bash's own compgen/complete, not
# the bash-completion package's helpers), so it works wherever it is sourced.
# Installed as /usr/share/bash-completion/completions/refract.

_refract() {
    local cur prev cmd i w
    local commands="status user ban unban reload check replay cleanup help"
    # Flags that configure the daemon; check, replay and cleanup read them.
    local settings="--proto --dport --window --timeout --access-log --block-log --limit --limits --ipv6-prefix --allow --confirm --dry-run --from-start --firewall --set-name --set-name6 --set-size --max-line --max-users --max-keys --metrics --metrics-file --on-ban --on-unban --hook-timeout --hook-max --fleet --node --fleet-prefix --fleet-timeout --shape --shape-dev --rate-down --rate-up"
    local common="--control --env-file --help -h"
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    # `--flag=value`: bash splits at `=` (COMP_WORDBREAKS): right after it
    # the current word is `=`; after a part of the value, `=` is the
    # previous word and the flag the one before.
    if [[ $cur == "=" ]]; then
        cur=
    elif [[ $prev == "=" ]] && ((COMP_CWORD > 1)); then
        prev=${COMP_WORDS[COMP_CWORD - 2]}
    fi

    # The command: the first word after `refract` that is not a flag or a
    # flag's value.
    cmd=
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case " $commands " in
            *" $w "*)
                cmd=$w
                break
                ;;
        esac
    done

    case $prev in
        --access-log | --access.log | --block-log | --block.log | --limits | --env-file | --control | --metrics-file)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            return 0
            ;;
        --proto)
            mapfile -t COMPREPLY < <(compgen -W "tcp udp tcp,udp" -- "$cur")
            return 0
            ;;
        --firewall)
            mapfile -t COMPREPLY < <(compgen -W "iptables none nftables auto" -- "$cur")
            return 0
            ;;
        --shape)
            mapfile -t COMPREPLY < <(compgen -W "on off" -- "$cur")
            return 0
            ;;
        --shape-dev)
            mapfile -t COMPREPLY < <(compgen -W "auto $(ls /sys/class/net 2>/dev/null)" -- "$cur")
            return 0
            ;;
        --dport | --window | --timeout | --limit | --ipv6-prefix | --allow | --set-name | --set-name6 | --set-size | --max-line | --max-users | --max-keys | --metrics | --on-ban | --on-unban | --hook-timeout | --hook-max | --fleet | --node | --fleet-prefix | --fleet-timeout | --rate-down | --rate-up | --for | --reason | --user)
            # A value of the operator's own: nothing to offer.
            return 0
            ;;
    esac

    local flags
    case $cmd in
        "") flags="$settings $common -V --version" ;;
        status | user | reload) flags="--json $common" ;;
        ban) flags="--for --reason --json $common" ;;
        unban) flags="--user --all --json $common" ;;
        check) flags="$settings $common" ;;
        replay) flags="$settings --explain $common" ;;
        cleanup) flags="$settings $common" ;;
        help)
            mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
            return 0
            ;;
    esac

    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$flags" -- "$cur")
        return 0
    fi
    if [[ -z $cmd ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
        return 0
    fi
    if [[ $cmd == replay ]]; then
        # FILE (or - for standard input).
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        return 0
    fi
    return 0
}
complete -F _refract refract
