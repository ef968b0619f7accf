#!/bin/sh
# nodeimg's iptables wrapper, installed in the kube-proxy image nodeimg makes in host mode
# when its base has iptables but no wrapper of its own (src/nodeimage/iptables.rs).
#
# iptables, iptables-save, iptables-restore and the ip6tables ones point here until the first
# call. That call picks the backend (legacy or nft) the node uses, repoints them all at that
# backend's binaries, so later calls go straight there, and runs the command with it.
#
# It decides as the node's entrypoint does (select_iptables in the base image), on the same
# evidence in the same order, so kube-proxy writes its rules where the node's do:
#   1. KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY chains (the kubelet makes them in the
#      backend the node chose) in nft's mangle tables: nft;
#   2. the same chains in legacy: legacy (every table is read: naming `-t mangle` would make
#      legacy create that table);
#   3. otherwise the backend holding more rules, legacy on a tie.
#
# POSIX sh and the iptables binaries only (timeout if present): a component base image may
# have neither bash nor grep.
set -eu

sbin='{{sbin}}'

cmd=${0##*/}
case $cmd in
iptables | iptables-save | iptables-restore | ip6tables | ip6tables-save | ip6tables-restore) ;;
*)
    echo "iptables-wrapper: run it as iptables, ip6tables or their -save and -restore (not $cmd)" >&2
    exit 2
    ;;
esac

# Both families' save output of one backend; $1 is legacy or nft, the rest go to -save.
# iptables-nft 1.8.3 could hang when nf_tables is missing, hence the timeout.
save() {
    which=$1
    shift
    for family in iptables ip6tables; do
        if [ "$which" = nft ] && command -v timeout >/dev/null 2>&1; then
            timeout 5 "$sbin/$family-$which-save" "$@" 2>/dev/null || true
        else
            "$sbin/$family-$which-save" "$@" 2>/dev/null || true
        fi
    done
}

has_kubelet_chains() {
    while IFS= read -r line; do
        case $line in
        ":KUBE-IPTABLES-HINT "* | ":KUBE-KUBELET-CANARY "*) return 0 ;;
        esac
    done
    return 1
}

count_rules() {
    n=0
    while IFS= read -r line; do
        case $line in -*) n=$((n + 1)) ;; esac
    done
    echo "$n"
}

if save nft -t mangle | has_kubelet_chains; then
    mode=nft
elif save legacy | has_kubelet_chains; then
    mode=legacy
else
    legacy=$(save legacy | count_rules)
    nft=$(save nft | count_rules)
    mode=legacy
    if [ "$nft" -gt "$legacy" ]; then mode=nft; fi
fi

# iptables-save -> iptables-<mode>-save, iptables -> iptables-<mode>.
backend() {
    family=${1%%-*}
    echo "$family-$mode${1#"$family"}"
}

# Each link is replaced by a rename, so a concurrent call never finds the name missing.
# Failing to repoint (a read-only root) only costs the next call the same decision.
for c in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    tmp="$sbin/.$c.nodeimg-$$"
    if ! { ln -s "$(backend "$c")" "$tmp" && mv -f "$tmp" "$sbin/$c"; } 2>/dev/null; then
        rm -f "$tmp" 2>/dev/null || true
    fi
done

exec "$sbin/$(backend "$cmd")" "$@"
