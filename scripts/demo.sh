#!/usr/bin/env bash
# The demo, as root: installs what is missing, builds sftsan, and runs a local cluster
# (examples/local-cluster.toml: origin + 6 nodes in network namespaces, degree 2,
# 3 snapshots each): plan, up, verify (every node reads a snapshot through its cache),
# status, down.
#
#   sudo bash scripts/demo.sh            # everything
#   sudo bash scripts/demo.sh --quick    # skip the install step
#   sudo bash scripts/demo.sh -v         # verbose sftsan output
#
# If up, verify or status fails, the cluster is still taken down.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

quick=0
verbose=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -v) verbose=(-v) ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) die "unknown argument $arg (use --quick, -v)" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo bash $0)"

# sudo may drop ~/.cargo/bin from PATH.
for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$dir/cargo" ]; then PATH="$dir:$PATH"; fi
done
export PATH

SPEC=examples/local-cluster.toml
DEMO_DIR=/var/tmp/sftsan-demo
IMAGE=$DEMO_DIR/base.raw
BIN=${CARGO_TARGET_DIR:-target}/release/sftsan

if [ "$quick" -eq 1 ]; then
    log "skipping install (--quick)"
else
    log "installing dependencies (scripts/install-deps.sh)"
    bash scripts/install-deps.sh
fi

log "building: cargo build --release -p sftsan-cli"
cargo build --release -p sftsan-cli
[ -x "$BIN" ] || die "$BIN not found after the build"

if [ -f "$IMAGE" ]; then
    log "base image: $IMAGE exists"
else
    log "base image: writing 256 MiB of random data to $IMAGE"
    mkdir -p "$DEMO_DIR"
    head -c 256M /dev/urandom >"$IMAGE.tmp"
    mv "$IMAGE.tmp" "$IMAGE"
fi
log "base image sha256: $(sha256sum "$IMAGE" | cut -d' ' -f1)"

sftsan() {
    log "sftsan ${verbose[*]:+${verbose[*]} }$*"
    "$BIN" "${verbose[@]}" "$@"
}

sftsan plan "$SPEC"

# From here on the cluster may exist: take it down however we leave.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    log "taking the cluster down after a failure"
    sftsan down "$SPEC" || log "down failed too; run '$BIN down $SPEC' by hand"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sftsan up "$SPEC"
sftsan verify "$SPEC"
sftsan status "$SPEC"

trap - EXIT INT TERM
sftsan down "$SPEC"
log "done"
