#!/usr/bin/env bash
# The flow of examples/c/cluster.c with the sftsan command: plan, up, verify, status,
# one extra VM snapshot, down. If any step fails, the trap takes the cluster down.
#
#   usage: cluster.sh SPEC [NODE]     (NODE: where the extra snapshot goes; default the
#                                      first node after the origin)
#
# Run as root for a local-mode cluster. $SFTSAN names the sftsan binary (default: sftsan
# on PATH), e.g. SFTSAN=target/debug/sftsan bash examples/shell/cluster.sh examples/local-cluster.toml
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 SPEC [NODE]" >&2
    exit 2
fi
spec=$1
sftsan=${SFTSAN:-sftsan}

log() { printf 'cluster.sh: %s\n' "$*" >&2; }

# Until the end, leaving this script (a failed step, Ctrl-C) takes the cluster down.
finished=0
cleanup() {
    local status=$?
    if [ "$finished" -eq 0 ]; then
        log "failed (exit $status): taking the cluster down"
        "$sftsan" down "$spec" || log "down failed too: see above"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "plan"
"$sftsan" plan "$spec"

# The node's name and its planned snapshot count, from the plan; the extra snapshot is
# the one after them (snapshots beyond the plan are made on demand).
plan_json=$("$sftsan" plan "$spec" --json)
node=${2:-$(python3 -c 'import json, sys; print(json.load(sys.stdin)["nodes"][1]["name"])' \
    <<<"$plan_json")}
planned=$(python3 -c 'import json, sys
node = sys.argv[1]
for n in json.load(sys.stdin)["nodes"]:
    if n["name"] == node:
        print(sum(r["kind"] == "snapshot" for r in n["stack"]))
        break
else:
    sys.exit("no node named %r in the plan" % node)' "$node" <<<"$plan_json")
index=$((planned + 1))

log "up"
"$sftsan" up "$spec"

log "verify"
"$sftsan" verify "$spec"

log "status"
"$sftsan" status "$spec" --json | python3 -m json.tool

log "snapshot $index on $node"
path=$("$sftsan" snapshot create "$spec" "$node" "$index")
test -f "$path"
echo "snapshot: $node $index $path"

log "down"
"$sftsan" down "$spec"
finished=1
echo "down: ok"
