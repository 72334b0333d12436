#!/usr/bin/env bash
# Fuzzes every parser of outside input with cargo-fuzz (libFuzzer, AddressSanitizer):
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]   # SECONDS per target (default 60), every target
#
# Targets (fuzz/fuzz_targets/): spec_toml, legacy_import, domain_template, hook_stdin, journal.
# A finding is a crash, a panic (a failed property too), one input running over 1 s, or an
# input allocating over 256 MiB: libFuzzer stops that target and keeps the input under
# fuzz/artifacts/TARGET/; this script then exits non-zero. Reproduce one with
# `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...` in fuzz/.
#
# Each target starts from the committed seeds (fuzz/seeds/TARGET) plus the repository's
# examples, in a working corpus fuzz/corpus/TARGET that grows between runs (not committed).
# Targets run side by side, one per core (SFTSAN_FUZZ_JOBS sets how many). Installs cargo-fuzz if it is missing; uses the
# nightly toolchain if rustup has one, else the stable one with RUSTC_BOOTSTRAP=1 (the
# sanitizer flags cargo-fuzz passes are unstable); SFTSAN_FUZZ_STABLE=1 chooses the latter.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
log() { printf 'fuzz: %s\n' "$*"; }
die() { printf 'fuzz: error: %s\n' "$*" >&2; exit 1; }

all_targets=(spec_toml legacy_import domain_template hook_stdin journal)
seconds=${1:-60}
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a whole number of seconds, got '$seconds'"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || die "unknown target '$t' (targets: ${all_targets[*]})"
done

for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$dir/cargo" ]; then PATH="$dir:$PATH"; fi
done
export PATH

toolchain=()
if [ -z "${SFTSAN_FUZZ_STABLE:-}" ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
    log "toolchain: $(rustc +nightly --version)"
else
    export RUSTC_BOOTSTRAP=1
    log "toolchain: $(rustc --version) with RUSTC_BOOTSTRAP=1 (no nightly installed)"
fi
if ! cargo "${toolchain[@]}" fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# The working corpus of each target: its seeds, and the examples that are its input.
seed_corpus() { # seed_corpus TARGET DIR
    mkdir -p "$2"
    cp -n "$repo/fuzz/seeds/$1"/* "$2"/ 2>/dev/null || true
    case $1 in
        spec_toml) cp -n "$repo"/examples/*.toml "$2"/ ;;
        journal) cp -n "$repo"/sftsan-core/src/engine/journal/fixtures/*.json "$2"/ ;;
        legacy_import) # cfg.data, a NUL byte, the nodes file
            cat "$repo/examples/legacy/cfg.data" <(printf '\0') "$repo/examples/legacy/nodes" \
                >"$2/examples-legacy" ;;
        domain_template | hook_stdin)
            cp -n "$repo"/examples/libvirt/*.xml "$repo"/examples/libvirt/templates/*.xml "$2"/ ;;
    esac
}

cd "$repo/fuzz"
log "building ${targets[*]}"
for t in "${targets[@]}"; do
    cargo "${toolchain[@]}" fuzz build "$t" >/dev/null
done

mkdir -p logs
# ASan keeps freed memory in quarantine; capped so that RSS measures what an input uses.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=16}
run_target() { # run_target TARGET: fuzz it for $seconds, output in logs/TARGET.log
    local t=$1
    seed_corpus "$t" "corpus/$t"
    mkdir -p "artifacts/$t"
    cargo "${toolchain[@]}" fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=1 -rss_limit_mb=256 -malloc_limit_mb=256 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        >"logs/$t.log" 2>&1
}

jobs_max=${SFTSAN_FUZZ_JOBS:-$(nproc)}
[[ "$jobs_max" =~ ^[1-9][0-9]*$ ]] || die "SFTSAN_FUZZ_JOBS must be a whole number above 0, got '$jobs_max'"
declare -A pid_of=()
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
    log "fuzzing $t for ${seconds} s"
    run_target "$t" &
    pid_of[$t]=$!
done

status=0
printf '%-16s %12s %10s %8s  %s\n' TARGET RUNS EXEC/S CORPUS RESULT
for t in "${targets[@]}"; do
    if wait "${pid_of[$t]}"; then result=ok; else result=FINDING status=1; fi
    runs=$(awk '/stat::number_of_executed_units:/ {print $2}' "logs/$t.log" | tail -1)
    rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "logs/$t.log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    printf '%-16s %12s %10s %8s  %s\n' "$t" "${runs:-?}" "${rate:-?}" "$corpus" "$result"
    if [ "$result" != ok ]; then
        grep -E 'ERROR|panicked|Test unit written|SUMMARY' "logs/$t.log" | head -20 | sed 's/^/    /'
    fi
done
[ "$status" -eq 0 ] || log "findings above; inputs kept in fuzz/artifacts/, logs in fuzz/logs/"
exit "$status"
