#!/usr/bin/env bash
# Installs sftsan's .deb into a fresh root and checks that it puts the binaries and
# libvirt's hook in place; then upgrades, removes and purges it there. As root:
#
#   bash tests/deb/check-install.sh target/debian/sftsan_0.1.0-1_amd64.deb
#
# The fresh root is made in a private mount and PID namespace: this host's /usr, /etc and
# /var as the read-only lower layers of overlays whose upper layers live in a tmpfs, and a
# new /dev, /proc, /run and /tmp; the .deb goes in with `apt-get install ./sftsan_*.deb`
# (only packages already on this host: nothing is downloaded). Every write lands in the
# tmpfs and every mount dies with the namespace, so the host's /usr, /etc and dpkg
# database are never touched, even when this script is killed. In that root:
#   - the package's control data: name, the declared dependencies ($auto's libvirt0
#     among them), its files, no conffiles;
#   - `apt-get install -s -t bookworm-backports` on a bare Debian 12 (a dpkg database of
#     the required packages only) resolves it from this host's package lists;
#   - the install puts /usr/bin/sftsan, /usr/bin/sftsan-hook and the link
#     /etc/libvirt/hooks/qemu.d/sftsan -> /usr/bin/sftsan-hook in place; `sftsan
#     --version` and the hook (through its link) run there; postinst calls no systemctl
#     without a running systemd;
#   - an upgrade keeps the link; removal takes binaries and link away;
#   - under a "running" systemd (a stub systemctl), a fresh install try-restarts a running
#     libvirtd and survives the restart failing; purge removes the hook's log;
#   - a hook an administrator put there is left alone by install and purge.
# Exits non-zero with one line "deb-check: FAILED: <reason>" when a check fails.
set -euo pipefail

log() { printf 'deb-check: %s\n' "$*"; }
fail() { printf 'deb-check: FAILED: %s\n' "$*" >&2; exit 1; }

HOOK=/etc/libvirt/hooks/qemu.d/sftsan
HOOK_TARGET=/usr/bin/sftsan-hook
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

[ $# -eq 1 ] || { echo "usage: bash $0 PATH/TO/sftsan_VERSION_ARCH.deb" >&2; exit 2; }

# --- inside the namespace: the fresh root and the checks -----------------------------------
inner() {
    local deb=$1 work=$SFTSAN_DEB_CHECK_WORK
    local root=$work/root d

    mount -t tmpfs -o mode=0755 sftsan-deb-check "$work"
    mkdir -p "$root" "$work/upper" "$work/ovl-work"
    for d in usr etc var; do
        mkdir -p "$root/$d" "$work/upper/$d" "$work/ovl-work/$d"
        mount -t overlay "sftsan-deb-$d" \
            -o "lowerdir=/$d,upperdir=$work/upper/$d,workdir=$work/ovl-work/$d" "$root/$d" ||
            fail "cannot mount an overlay over /$d (overlayfs missing?)"
    done
    # Merged /usr (Debian 12): /bin, /sbin, /lib* are links into /usr; else overlays too.
    for d in bin sbin lib lib32 lib64 libx32; do
        if [ -L "/$d" ]; then
            ln -s "$(readlink "/$d")" "$root/$d"
        elif [ -d "/$d" ]; then
            mkdir -p "$root/$d" "$work/upper/$d" "$work/ovl-work/$d"
            mount -t overlay "sftsan-deb-$d" \
                -o "lowerdir=/$d,upperdir=$work/upper/$d,workdir=$work/ovl-work/$d" "$root/$d"
        fi
    done
    mkdir -p "$root/proc" "$root/dev" "$root/run" "$root/tmp" "$root/root"
    mount -t proc proc "$root/proc"
    mount -t tmpfs -o mode=0755 dev "$root/dev"
    for d in null zero full random urandom tty; do
        touch "$root/dev/$d"
        mount --bind "/dev/$d" "$root/dev/$d"
    done
    mkdir -p "$root/dev/pts"
    if mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts" 2>/dev/null; then
        ln -s pts/ptmx "$root/dev/ptmx"
    fi
    mount -t tmpfs -o mode=0755 run "$root/run"
    mount -t tmpfs -o mode=1777 tmp "$root/tmp"

    in_root() { chroot "$root" env -i PATH="$CHROOT_PATH" HOME=/root LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"; }
    # Runs a package command in the root, its output into a log shown only on failure.
    pkg() { # pkg WHAT COMMAND...
        local what=$1
        shift
        if ! in_root "$@" >"$work/pkg.log" 2>&1; then
            sed 's/^/    /' "$work/pkg.log" >&2
            fail "$what: '$*' failed in the fresh root (its output above)"
        fi
    }
    # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
    status_of() { in_root dpkg-query -W -f='${db:Status-Abbrev}' sftsan 2>/dev/null | tr -d ' ' || true; }

    # The root is fresh for sftsan: a package or files of the host's own are taken out of
    # it (of the overlay only).
    if [ -n "$(status_of)" ] && [ "$(status_of)" != un ] && [ "$(status_of)" != pn ]; then
        log "this host has the sftsan package ($(status_of)): purging it from the fresh root"
        pkg "purging the host's sftsan" dpkg --purge sftsan
    fi
    for f in /usr/bin/sftsan /usr/bin/sftsan-hook "$HOOK"; do
        if [ -e "$root$f" ] || [ -L "$root$f" ]; then
            log "this host has its own $f: removed from the fresh root"
            rm -f "$root$f"
        fi
    done
    local had_qemu_d=0
    [ -d "$root/etc/libvirt/hooks/qemu.d" ] && had_qemu_d=1
    # Services are never started from here, and the systemctl stub below is the only one.
    rm -f "$root/usr/sbin/policy-rc.d"
    cat >"$root/usr/local/sbin/systemctl" <<'EOF'
#!/bin/sh
# deb-check's stub: records each call; libvirtd.service is "running"; restarts fail.
echo "$*" >>/tmp/systemctl.calls
case "$*" in
    *is-active*libvirtd.service*) exit 0 ;;
    *is-active*) exit 3 ;;
esac
exit 1
EOF
    chmod 755 "$root/usr/local/sbin/systemctl"

    local name
    name=$(basename "$deb")
    mkdir -m 755 "$root/tmp/deb"
    cp "$deb" "$root/tmp/deb/$name"
    chmod 644 "$root/tmp/deb/$name"
    local in_deb=/tmp/deb/$name

    # --- 1. the package's control data ---------------------------------------------------
    local depends version want f
    field() { dpkg-deb -f "$deb" "$1"; }
    [ "$(field Package)" = sftsan ] || fail "the package is called '$(field Package)', not sftsan"
    depends=$(field Depends)
    for want in 'libvirt0' 'libc6' 'qemu-utils (>= 1:10)' 'openssh-client' 'iproute2'; do
        case ", $depends," in
            *", $want"[\ ,]*) ;;
            *) fail "Depends lacks $want: $depends" ;;
        esac
    done
    version=$(field Version)
    dpkg-deb -c "$deb" | awk '{print $6}' >"$work/contents"
    for f in ./usr/bin/sftsan ./usr/bin/sftsan-hook ./usr/share/doc/sftsan/README.md; do
        grep -qxF "$f" "$work/contents" || fail "the package has no $f"
    done
    if dpkg-deb --ctrl-tarfile "$deb" | tar -t | grep -qx './conffiles'; then
        fail "the package has conffiles: $(dpkg-deb -I "$deb" conffiles | tr '\n' ' ')"
    fi
    log "package: sftsan $version, Depends: $depends"

    # --- 2. the dependencies resolve on a bare Debian 12 ----------------------------------
    # A dpkg database of what a minimal Debian 12 has: the Essential, required and
    # important packages, apt, and what they depend on (taken from this host's).
    python3 - "$root/var/lib/dpkg/status" >"$root/tmp/bare-status" <<'EOF'
import re, sys
stanzas, by_name, provides = open(sys.argv[1]).read().strip().split("\n\n"), {}, {}
for s in stanzas:
    fields, key = {}, None
    for line in s.split("\n"):
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
            continue
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    if "install ok installed" in fields.get("Status", ""):
        by_name[fields["Package"]] = (fields, s)
for name, (fields, _) in by_name.items():
    for p in filter(None, re.split(r"\s*,\s*", fields.get("Provides", ""))):
        provides.setdefault(p.split()[0], []).append(name)
todo = [n for n, (f, _) in by_name.items()
        if f.get("Essential") == "yes" or f.get("Priority") in ("required", "important")]
todo.append("apt")
wanted = set()
while todo:
    name = todo.pop()
    if name in wanted or name not in by_name:
        continue
    wanted.add(name)
    for field in ("Pre-Depends", "Depends"):
        for alternatives in filter(None, re.split(r"\s*,\s*", by_name[name][0].get(field, ""))):
            for alt in alternatives.split("|"):
                dep = alt.split()[0].split(":")[0]
                found = [dep] if dep in by_name else provides.get(dep, [])
                if found:
                    todo.extend(found)
                    break
print("\n\n".join(by_name[n][1] for n in sorted(wanted)))
EOF
    if ! compgen -G "$root/var/lib/apt/lists/*_dists_bookworm-backports_*Packages*" >/dev/null; then
        fail "no bookworm-backports package lists on this host (qemu-utils 10.x comes from there): run scripts/install-deps.sh"
    fi
    if ! in_root apt-get install -s -t bookworm-backports -o Dir::State::status=/tmp/bare-status \
        "$in_deb" >"$work/sim.log" 2>&1 || ! grep -q '^Inst sftsan ' "$work/sim.log"; then
        grep -E '^(E:| )' "$work/sim.log" | sed 's/^/    /' >&2 || true
        fail "apt cannot install the .deb on a bare Debian 12 with bookworm-backports (apt's reasons above)"
    fi
    log "bare Debian 12: 'apt install -t bookworm-backports ./$name' resolves ($(grep -c '^Inst ' "$work/sim.log") packages, $(grep -oE "^Inst qemu-utils \([^ ]+" "$work/sim.log" | sed 's/^Inst //;s/(//'))"

    # --- 3. install: binaries and hook in place -------------------------------------------
    # Nothing to download: every dependency must be installed on this host already.
    in_root apt-get install -s --no-install-recommends "$in_deb" >"$work/sim.log" 2>&1 || true
    local missing
    missing=$(awk '/^Inst / && $2 != "sftsan" {print $2}' "$work/sim.log" | tr '\n' ' ')
    [ -z "$missing" ] || fail "dependencies not installed on this host (run scripts/install-deps.sh): $missing"
    pkg "installing" apt-get install -y -q --no-install-recommends "$in_deb"
    [ "$(status_of)" = ii ] || fail "after apt-get install, dpkg says sftsan is '$(status_of)', not installed (ii)"
    for f in /usr/bin/sftsan /usr/bin/sftsan-hook; do
        { [ -f "$root$f" ] && [ -x "$root$f" ]; } || fail "$f is not an executable file after the install"
        [ "$(in_root dpkg-query -S "$f" 2>/dev/null | cut -d: -f1)" = sftsan ] ||
            fail "$f does not belong to the sftsan package"
        if in_root ldd "$f" | grep -q 'not found'; then
            fail "$f misses shared libraries in the fresh root: $(in_root ldd "$f" | grep 'not found' | tr -s ' \n' ' ')"
        fi
    done
    [ -f "$root/usr/share/doc/sftsan/README.md" ] || fail "/usr/share/doc/sftsan/README.md is missing"
    [ -L "$root$HOOK" ] || fail "$HOOK is not a symlink after the install"
    [ "$(readlink "$root$HOOK")" = "$HOOK_TARGET" ] ||
        fail "$HOOK points to '$(readlink "$root$HOOK")', not $HOOK_TARGET"
    local real
    real=$(in_root readlink -f "$HOOK")
    [ "$real" = "$HOOK_TARGET" ] || fail "$HOOK resolves to '$real', not $HOOK_TARGET"
    # The hook finds sftsan beside its real path.
    [ -x "$root$(dirname "$real")/sftsan" ] || fail "no executable sftsan beside the hook's real path $real"
    local out
    out=$(in_root sftsan --version 2>&1) || fail "'sftsan --version' failed in the fresh root: $out"
    [ "$out" = "sftsan ${version%-*}" ] || fail "'sftsan --version' says '$out', not 'sftsan ${version%-*}'"
    # As libvirt runs it, through the link, for a domain that is not sftsan's: exit 0, silent.
    out=$(printf "<domain type='kvm'><name>deb-check</name></domain>" |
        in_root "$HOOK" deb-check prepare begin - 2>&1) ||
        fail "the hook, run through $HOOK for a plain domain, failed: $out"
    [ -z "$out" ] || fail "the hook printed for a domain that is not sftsan's: $out"
    [ ! -e "$root/tmp/systemctl.calls" ] ||
        fail "postinst called systemctl without a running systemd: $(tr '\n' ';' <"$root/tmp/systemctl.calls")"
    log "installed: /usr/bin/sftsan, /usr/bin/sftsan-hook, $HOOK -> $HOOK_TARGET; '$(in_root sftsan --version)' runs; the hook runs; no systemctl without systemd"

    # --- 4. upgrade (the same version again) keeps the link ------------------------------
    pkg "upgrading" dpkg -i "$in_deb"
    [ "$(status_of)" = ii ] || fail "after an upgrade, dpkg says sftsan is '$(status_of)'"
    [ "$(readlink "$root$HOOK" 2>/dev/null)" = "$HOOK_TARGET" ] || fail "an upgrade lost the hook link $HOOK"
    log "upgrade: the hook link stays"

    # --- 5. remove: binaries and hook gone ---------------------------------------------
    pkg "removing" apt-get remove -y -q sftsan
    case "$(status_of)" in ii|iU|iF|iH) fail "after apt-get remove, dpkg says sftsan is '$(status_of)'" ;; esac
    for f in /usr/bin/sftsan /usr/bin/sftsan-hook "$HOOK"; do
        if [ -e "$root$f" ] || [ -L "$root$f" ]; then fail "$f is still there after apt-get remove"; fi
    done
    if [ "$had_qemu_d" -eq 0 ] && [ -d "$root/etc/libvirt/hooks/qemu.d" ]; then
        fail "apt-get remove left the empty /etc/libvirt/hooks/qemu.d that the install made"
    fi
    log "removed: binaries and hook link gone"

    # --- 6. under systemd: libvirtd restarted on a fresh install; purge ---------------------
    mkdir -p "$root/run/systemd/system"
    pkg "installing under systemd" dpkg -i "$in_deb"
    grep -qx 'try-restart libvirtd.service' "$root/tmp/systemctl.calls" 2>/dev/null ||
        fail "postinst did not try-restart a running libvirtd.service under systemd (calls: $(tr '\n' ';' <"$root/tmp/systemctl.calls" 2>/dev/null))"
    grep -q 'warning: could not restart libvirtd.service' "$work/pkg.log" ||
        fail "postinst did not warn that libvirtd's restart failed"
    [ "$(readlink "$root$HOOK" 2>/dev/null)" = "$HOOK_TARGET" ] || fail "the install under systemd made no hook link"
    mkdir -p "$root/var/log/libvirt"
    echo "0.000 deb-check" >"$root/var/log/libvirt/sftsan-hook.log"
    pkg "purging" dpkg --purge sftsan
    [ "$(status_of)" = un ] || [ -z "$(status_of)" ] || fail "after a purge, dpkg says sftsan is '$(status_of)'"
    for f in /usr/bin/sftsan /usr/bin/sftsan-hook "$HOOK" /var/log/libvirt/sftsan-hook.log; do
        if [ -e "$root$f" ] || [ -L "$root$f" ]; then fail "$f is still there after the purge"; fi
    done
    log "systemd: a running libvirtd is try-restarted, a failed restart only warns; purge removes the hook's log"

    # --- 7. an administrator's own hook is left alone --------------------------------------
    mkdir -p "$root/etc/libvirt/hooks/qemu.d"
    ln -s /usr/local/bin/sftsan-hook "$root$HOOK"
    pkg "installing beside an administrator's hook" dpkg -i "$in_deb"
    [ "$(readlink "$root$HOOK")" = /usr/local/bin/sftsan-hook ] || fail "the install replaced an administrator's $HOOK"
    grep -q "$HOOK exists and is not a link to $HOOK_TARGET" "$work/pkg.log" ||
        fail "the install did not say it left an administrator's $HOOK alone"
    pkg "purging beside an administrator's hook" dpkg --purge sftsan
    [ "$(readlink "$root$HOOK" 2>/dev/null)" = /usr/local/bin/sftsan-hook ] || fail "the purge removed an administrator's $HOOK"
    log "an administrator's own $HOOK survives install and purge"
}

if [ "${SFTSAN_DEB_CHECK_INNER:-}" = 1 ]; then
    inner "$1"
    exit 0
fi

# --- outside: the namespace, and that the host did not change ------------------------------
[ "$(id -u)" -eq 0 ] || fail "must run as root (namespaces, mounts, chroot)"
for tool in unshare chroot dpkg-deb dpkg-query apt-get python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found"
done
deb=$(readlink -f "$1")
[ -f "$deb" ] || fail "no such file: $1"

# What the host has of sftsan before; the same after, or the check leaked.
host_state() {
    local f
    dpkg-query -W -f='${db:Status-Abbrev}' sftsan 2>/dev/null || echo "no package"
    for f in /usr/bin/sftsan /usr/bin/sftsan-hook "$HOOK" /etc/libvirt/hooks/qemu.d; do
        if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"
        elif [ -e "$f" ]; then echo "$f $(stat -c '%s %Y' "$f")"
        else echo "$f absent"; fi
    done
}
before=$(host_state)

work=$(mktemp -d /tmp/sftsan-deb-check.XXXXXX)
ns_pid=
cleanup() {
    # Interrupted: SIGKILL to unshare (it blocks SIGTERM) takes its child, the namespace's
    # PID 1, with it (--kill-child), and so every process of the namespace.
    if [ -n "$ns_pid" ]; then
        kill -KILL "$ns_pid" 2>/dev/null || true
        wait "$ns_pid" 2>/dev/null || true
    fi
    # The namespace's mounts are gone with it: on the host, $work is an empty directory.
    rmdir "$work" 2>/dev/null || rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
start=$SECONDS
rc=0
SFTSAN_DEB_CHECK_INNER=1 SFTSAN_DEB_CHECK_WORK=$work \
    unshare --mount --propagation private --pid --fork --kill-child -- bash "$0" "$deb" &
ns_pid=$!
wait "$ns_pid" || rc=$?
ns_pid=
[ "$rc" -eq 0 ] || exit "$rc"
after=$(host_state)
[ "$before" = "$after" ] || fail "the host's sftsan files changed: before: $(echo "$before" | tr '\n' ';') after: $(echo "$after" | tr '\n' ';')"
log "ok ($((SECONDS - start)) s): the host's sftsan files and dpkg database entry are unchanged"
