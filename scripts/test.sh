#!/usr/bin/env bash
# Runs every test of the workspace, as root (the integration tests create network
# namespaces and start qemu-storage-daemon):
#
#   bash scripts/test.sh            # install what is missing, then fmt, clippy, tests, fuzz
#   bash scripts/test.sh --quick    # skip the install step
#
# Exits non-zero if any step fails; the cargo steps all run, so one report shows every failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'test.sh: %s\n' "$*"; }

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) printf 'test.sh: unknown argument %s (use --quick)\n' "$arg" >&2; exit 2 ;;
    esac
done

# sudo may drop ~/.cargo/bin from PATH.
for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$dir/cargo" ]; then PATH="$dir:$PATH"; fi
done
export PATH

if [ "$quick" -eq 1 ]; then
    log "skipping install (--quick)"
else
    log "installing dependencies (scripts/install-deps.sh)"
    bash scripts/install-deps.sh
fi
if [ "$(id -u)" -ne 0 ]; then
    log "warning: not root; the integration tests need root and will fail"
fi

failed=()
timed_step() { # timed_step NAME COMMAND...: runs it, logging its outcome and time
    local name=$1 start=$SECONDS
    shift
    log "$name: $*"
    if "$@"; then
        log "$name: ok ($((SECONDS - start)) s)"
    else
        log "$name: FAILED ($((SECONDS - start)) s)"
        return 1
    fi
}
step() { # step NAME COMMAND...: a step of the run; a failure is reported at the end
    timed_step "$@" || failed+=("$1")
}

# Steps that share nothing run side by side: each one's output goes to a file, shown
# whole when the step ends, so the log reads as if they had run one after the other.
parallel_names=() parallel_pids=() parallel_logs=()
trap 'kill "${parallel_pids[@]}" 2>/dev/null || true' INT TERM
parallel_step() { # parallel_step NAME COMMAND...
    local name=$1 out
    shift
    out=$(mktemp "${TMPDIR:-/tmp}/sftsan-test-$name.XXXXXX")
    log "$name: $* (started; runs beside the other parallel steps)"
    (
        start=$SECONDS
        if "$@"; then
            echo "test.sh: $name: ok ($((SECONDS - start)) s)"
        else
            echo "test.sh: $name: FAILED ($((SECONDS - start)) s)"
            exit 1
        fi
    ) >"$out" 2>&1 </dev/null &
    parallel_names+=("$name") parallel_pids+=("$!") parallel_logs+=("$out")
}
wait_parallel_steps() {
    local i
    for i in "${!parallel_pids[@]}"; do
        wait "${parallel_pids[$i]}" || failed+=("${parallel_names[$i]}")
        log "${parallel_names[$i]}: its output:"
        cat "${parallel_logs[$i]}"
        rm -f "${parallel_logs[$i]}"
    done
    parallel_names=() parallel_pids=() parallel_logs=()
}

# The root tier: tests marked #[ignore = "root tier: ..."] need root and real daemons
# (clusters, libvirtd, QEMU). Kernel-path tests (tests/tests/kernel*.rs) are the kernel
# tier's, run inside its guest.
root_tier() {
    # One `cargo test --workspace` with every test target but the kernel tier's: the same
    # feature resolution as the `test` step, so nothing is built again.
    local targets=() f name
    for f in */tests/*.rs; do
        name=${f##*/}
        name=${name%.rs}
        [[ $name == kernel* ]] || targets+=(--test "$name")
    done
    cargo test --workspace --lib --bins "${targets[@]}" -- --ignored
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step doc env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
step test cargo test --workspace
step root-tier root_tier
# Kernel-path tests are #[ignore = "kernel tier: ..."] above: this host's kernel has no
# device-mapper, LIO or iSCSI, so the kernel tier runs them inside a QEMU guest booting a
# stock Debian kernel. Beside it, every parser of outside input is fuzzed briefly, so that
# a regression shows (scripts/fuzz.sh 600 is the long run docs/fuzzing.md reports); fuzzing
# builds in fuzz/target, so the two share neither files nor cargo's lock. The guest runs its
# tests one at a time on about one core; fuzzing takes one target at a time beside it.
#
# The .deb (a release build in target/release, whose cargo lock is not the kernel tier's
# target/debug one, cargo-deb, then an install into a fresh root) follows the fuzzers in
# their lane: two lanes for two cores, so the guest's timing-bound iSCSI logins never
# share a core with two other CPU-bound jobs.
fuzz_then_deb() {
    local rc=0
    timed_step fuzz env SFTSAN_FUZZ_JOBS=1 bash scripts/fuzz.sh "${SFTSAN_FUZZ_SECONDS:-30}" || rc=1
    timed_step deb bash tests/deb/run || rc=1
    return "$rc"
}
parallel_step kernel-vm bash tests/kernel-vm/run
parallel_step fuzz-then-deb fuzz_then_deb
wait_parallel_steps

if [ "${#failed[@]}" -gt 0 ]; then
    log "FAILED steps: ${failed[*]}"
    exit 1
fi
log "all steps passed: fmt, clippy, doc, test, root-tier, kernel-vm, fuzz, deb"
