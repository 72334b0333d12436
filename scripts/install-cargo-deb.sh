#!/usr/bin/env bash
# Installs cargo-deb (the `cargo deb` subcommand that scripts/build-deb.sh uses) with
# `cargo install --locked`, unless a cargo-deb at least as new as the pinned one is there.
# Also makes sure dpkg-shlibdeps (dpkg-dev) is there: cargo-deb runs it to turn `$auto` into
# the shared libraries' packages. Idempotent: a second run only checks. Building cargo-deb
# takes one to a few minutes.
#
#   bash scripts/install-cargo-deb.sh
set -euo pipefail

# 3.8.0: the newest release when this was written; its rust-version is 1.85, the
# workspace's own minimum, so it builds with any toolchain that builds sftsan.
CARGO_DEB_VERSION=3.8.0

log() { printf 'install-cargo-deb: %s\n' "$*"; }
die() { printf 'install-cargo-deb: error: %s\n' "$*" >&2; exit 1; }

# sudo may drop ~/.cargo/bin from PATH.
for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$dir/cargo" ]; then PATH="$dir:$PATH"; fi
done
export PATH
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain first"

if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "dpkg-shlibdeps is missing: apt-get install dpkg-dev (as root)"
    log "installing dpkg-dev (dpkg-shlibdeps)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dpkg-dev >/dev/null ||
        die "apt-get install dpkg-dev failed"
fi

# "cargo-deb 3.8.0" -> "3.8.0"; empty when cargo-deb is missing.
installed=$(cargo deb --version 2>/dev/null | awk '{print $2; exit}' || true)
if [ -n "$installed" ] &&
    [ "$(printf '%s\n%s\n' "$CARGO_DEB_VERSION" "$installed" | sort -V | head -1)" = "$CARGO_DEB_VERSION" ]; then
    log "cargo-deb $installed already installed (>= $CARGO_DEB_VERSION)"
    exit 0
fi
log "installing cargo-deb $CARGO_DEB_VERSION (was: ${installed:-not installed}); this takes a few minutes"
# cargo install builds in CARGO_TARGET_DIR when it is set, and keeps it: build in a
# temporary directory of its own instead.
env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
    nice cargo install cargo-deb --version "=$CARGO_DEB_VERSION" --locked --quiet ||
    die "cargo install cargo-deb $CARGO_DEB_VERSION failed"
installed=$(cargo deb --version 2>/dev/null | awk '{print $2; exit}' || true)
[ "$installed" = "$CARGO_DEB_VERSION" ] || die "cargo deb --version reports '${installed:-nothing}' after the install, not $CARGO_DEB_VERSION"
log "cargo-deb $installed installed"
