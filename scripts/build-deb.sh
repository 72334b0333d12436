#!/usr/bin/env bash
# Builds sftsan's Debian package with cargo-deb: both binaries in release (sftsan, and
# sftsan-libvirt's sftsan-hook, which cargo-deb would not build: it builds only the
# packaged crate's own), then `cargo deb -p sftsan-cli --no-build`. Packaging metadata:
# [package.metadata.deb] in sftsan-cli/Cargo.toml; maintainer scripts: packaging/deb/.
#
#   bash scripts/build-deb.sh    # prints the .deb's path, e.g. target/debian/sftsan_0.1.0-1_amd64.deb
#
# The path is the only line on stdout (the build's output goes to stderr). The .deb goes
# to <target dir>/debian/ (target/debian/ unless CARGO_TARGET_DIR says otherwise). Installs
# cargo-deb first if it is missing (scripts/install-cargo-deb.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'build-deb: %s\n' "$*" >&2; }
die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }

# sudo may drop ~/.cargo/bin from PATH.
for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$dir/cargo" ]; then PATH="$dir:$PATH"; fi
done
export PATH

bash scripts/install-cargo-deb.sh >&2

target_dir=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
    die "cargo metadata failed"
out_dir=$target_dir/debian
# Last run's packages must not be mistaken for this one's.
rm -f "$out_dir"/sftsan_*.deb

start=$SECONDS
log "building sftsan and sftsan-hook (release)"
nice cargo build --release -p sftsan-cli -p sftsan-libvirt --bins >&2 ||
    die "cargo build --release failed"
log "release build: $((SECONDS - start)) s"

start=$SECONDS
log "packaging (cargo deb -p sftsan-cli --no-build)"
nice cargo deb -p sftsan-cli --no-build --output "$out_dir/" >&2 ||
    die "cargo deb failed (see above)"
debs=("$out_dir"/sftsan_*.deb)
[ -f "${debs[0]}" ] || die "cargo deb made no $out_dir/sftsan_*.deb"
[ "${#debs[@]}" -eq 1 ] || die "more than one package in $out_dir: ${debs[*]}"
log "packaged in $((SECONDS - start)) s: ${debs[0]}"
# Relative to the repository when inside it.
printf '%s\n' "${debs[0]#"$PWD"/}"
