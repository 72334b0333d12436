#!/usr/bin/env bash
# Installs what sftsan needs to build and run on Debian 12 (bookworm), as root.
# Idempotent: a second run changes nothing and only checks.
#
# - adds Debian's bookworm-backports suite for the mirror this machine's own apt sources
#   name (derived at run time; no host name is written into the repository)
# - qemu-utils 10.x (qemu-storage-daemon) and the matching qemu-block-extra (libiscsi driver)
#   from bookworm-backports
# - iproute2, tgt, libiscsi-bin; build tools and the C headers later crates need
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (try: sudo bash $0)"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script is for Debian 12 (bookworm)"

export DEBIAN_FRONTEND=noninteractive

BACKPORTS_FILE=/etc/apt/sources.list.d/sftsan-backports.sources
DEB822_FILE=/etc/apt/sources.list.d/debian.sources
LEGACY_FILE=/etc/apt/sources.list

# The first URI of the deb822 stanza whose Suites include "bookworm".
mirror_from_deb822() {
    [ -r "$DEB822_FILE" ] || return 0
    awk '
        function flush() {
            if (!done && has_bookworm && uri != "") { print uri; done = 1 }
            has_bookworm = 0; uri = ""
        }
        /^[[:space:]]*#/ { next }
        /^[[:space:]]*$/ { flush(); next }
        tolower($1) == "suites:" {
            for (i = 2; i <= NF; i++) if ($i == "bookworm") has_bookworm = 1
        }
        tolower($1) == "uris:" { uri = $2 }
        END { flush() }
    ' "$DEB822_FILE"
}

# The URI of the first one-line "deb" entry for suite "bookworm" (options in [...] skipped).
mirror_from_one_line() {
    [ -r "$LEGACY_FILE" ] || return 0
    awk '
        /^[[:space:]]*#/ { next }
        $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == "bookworm") { print $i; exit }
        }
    ' "$LEGACY_FILE"
}

backports_configured() {
    grep -rqsE '(^|[[:space:]])bookworm-backports([[:space:]]|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

# --- 1. Rust toolchain -----------------------------------------------------------------
for dir in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin; do
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$dir/cargo" ]; then PATH="$dir:$PATH"; fi
done
if ! cargo_version=$(cargo --version 2>/dev/null); then
    die "no Rust toolchain: 'cargo --version' failed. This machine kind ships one (rustup, in ~/.cargo/bin); put it on PATH and run again"
fi
log "rust toolchain: $cargo_version"

# --- 2. bookworm-backports ---------------------------------------------------------------
sources_changed=0
if [ -e "$BACKPORTS_FILE" ]; then
    log "backports: $BACKPORTS_FILE already present"
elif backports_configured; then
    log "backports: bookworm-backports already in this machine's apt sources"
else
    mirror=$(mirror_from_deb822)
    [ -n "$mirror" ] || mirror=$(mirror_from_one_line)
    [ -n "$mirror" ] || die "cannot find a bookworm mirror in $DEB822_FILE or $LEGACY_FILE"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    {
        echo "# Written by sftsan scripts/install-deps.sh: same mirror as this machine's bookworm entry."
        echo "Types: deb"
        echo "URIs: $mirror"
        echo "Suites: bookworm-backports"
        echo "Components: main"
        if [ -r "$keyring" ]; then echo "Signed-By: $keyring"; fi
    } >"$BACKPORTS_FILE"
    sources_changed=1
    log "backports: wrote $BACKPORTS_FILE (mirror $mirror)"
fi

# --- 3. apt-get update -------------------------------------------------------------------
lists_missing() {
    # No package list at all, or none for backports yet.
    ! compgen -G '/var/lib/apt/lists/*_dists_bookworm_*Packages*' >/dev/null ||
        ! compgen -G '/var/lib/apt/lists/*_dists_bookworm-backports_*Packages*' >/dev/null
}
# apt's own output goes to a log, shown in full only when a step fails.
APT_LOG=$(mktemp /tmp/sftsan-install-deps.XXXXXX)
trap 'rm -f "$APT_LOG"' EXIT
quiet() {
    if ! "$@" >"$APT_LOG" 2>&1; then
        cat "$APT_LOG" >&2
        return 1
    fi
}
apt_updated=0
apt_update() {
    log "apt-get update"
    quiet apt-get update
    apt_updated=1
}
if [ "$sources_changed" -eq 1 ] || lists_missing; then
    apt_update
else
    log "apt-get update: not needed yet (lists present, sources unchanged; runs before any install)"
fi

# --- 4. packages ---------------------------------------------------------------------------
installed_version() { # prints the installed version of $1, or nothing
    dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null |
        awk '$1 == "ii" { print $2 }'
}
apt_install() {
    [ "$apt_updated" -eq 1 ] || apt_update
    quiet apt-get install -y --no-install-recommends "$@"
}

# qemu-utils must be 10.x (qemu-storage-daemon with the features sftsan uses).
qemu_version=$(installed_version qemu-utils)
case "$qemu_version" in
    1:10.*|10.*) log "qemu-utils: $qemu_version installed" ;;
    *)
        log "qemu-utils: ${qemu_version:-not installed}; installing 10.x from bookworm-backports"
        apt_install -t bookworm-backports qemu-utils
        qemu_version=$(installed_version qemu-utils)
        case "$qemu_version" in
            1:10.*|10.*) ;;
            *) die "qemu-utils is $qemu_version after install, not 10.x" ;;
        esac
        ;;
esac

# qemu-block-extra (QEMU's iSCSI driver) must be the very build of qemu-utils.
block_version=$(installed_version qemu-block-extra)
if [ "$block_version" = "$qemu_version" ]; then
    log "qemu-block-extra: $block_version installed (matches qemu-utils)"
else
    log "qemu-block-extra: ${block_version:-not installed}; installing $qemu_version from bookworm-backports"
    if ! apt_install -t bookworm-backports "qemu-block-extra=$qemu_version"; then
        log "qemu-block-extra $qemu_version not available; upgrading qemu-utils and qemu-block-extra together from bookworm-backports"
        apt_install -t bookworm-backports qemu-utils qemu-block-extra
    fi
    qemu_version=$(installed_version qemu-utils)
    block_version=$(installed_version qemu-block-extra)
    [ "$block_version" = "$qemu_version" ] ||
        die "qemu-block-extra ($block_version) does not match qemu-utils ($qemu_version)"
fi

# qemu-system-x86 (the guests of `sftsan vm`, QEMU under TCG) must be that build as well.
system_version=$(installed_version qemu-system-x86)
if [ "$system_version" = "$qemu_version" ]; then
    log "qemu-system-x86: $system_version installed (matches qemu-utils)"
else
    log "qemu-system-x86: ${system_version:-not installed}; installing $qemu_version from bookworm-backports"
    apt_install -t bookworm-backports "qemu-system-x86=$qemu_version"
    system_version=$(installed_version qemu-system-x86)
    [ "$system_version" = "$qemu_version" ] ||
        die "qemu-system-x86 ($system_version) does not match qemu-utils ($qemu_version)"
fi

# libvirt-daemon-system (bookworm's libvirt 9.0, like libvirt-dev) creates the libvirt-qemu
# user; without systemd running it starts no daemon. valgrind, make and python3 run the
# C and Python callers' tests.
PACKAGES=(
    iproute2 tgt libiscsi-bin pkg-config gcc
    libvirt-dev libudev-dev libdevmapper-dev libiscsi-dev libblkid-dev libclang-dev
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
    valgrind make python3
)
# The kernel tier builds dm-clone.ko for its guest (tests/kernel-vm/build-dm-clone) and gives it udevd (libkmod2).
PACKAGES+=(gcc-12 libelf1 xz-utils libkmod2) # and make, above
# Remote mode: the controller's ssh, and the sshd each test host runs in its namespaces.
PACKAGES+=(openssh-client openssh-server)
# sftsan bench faults: 100% loss on a link is netem where the kernel has it, else iptables.
PACKAGES+=(iptables)
present=()
missing=()
for pkg in "${PACKAGES[@]}"; do
    if [ -n "$(installed_version "$pkg")" ]; then present+=("$pkg"); else missing+=("$pkg"); fi
done
if [ "${#present[@]}" -gt 0 ]; then log "already installed: ${present[*]}"; fi
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    # Packages with services (openssh-server, libvirt) must not start them here: tests run
    # their own. Without a policy-rc.d saying so, one is put in place for the install.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$APT_LOG" "$policy"' EXIT
    fi
    apt_install "${missing[@]}"
fi

# --- 5. check ------------------------------------------------------------------------------
for tool in qemu-storage-daemon qemu-img ip tgtd tgtadm iscsi-ls pkg-config gcc \
    qemu-system-x86_64 virsh ssh ssh-keygen sshd iptables; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found after install"
done
log "done: qemu-utils $qemu_version, qemu-block-extra $block_version, qemu-system-x86 $system_version"
