//! A guest that reads its whole disk over and over and says on its console what it read:
//! sftsan-bench's boot image (kernel and initramfs, built by its script when missing) with
//! an /init of its own, booted directly by libvirt (no disk needed to boot, so its one
//! disk is sftsan's snapshot, `vda`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where sftsan-bench/boot-image/build leaves the guest image.
const BOOT_IMAGE: &str = "/var/cache/sftsan/bench/boot-image";

/// The guest's /init, appended to the boot image's initramfs (a later archive's file wins):
/// the boot image's modules, then whole-disk reads of /dev/vda without the page cache, one
/// console line per pass with its digest, forever. Kernel messages of level error and
/// worse reach the console too (loglevel=4), so an I/O error the guest saw would show.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp
while read -r need ko; do
    insmod "/lib/modules/$ko" 2>/dev/null && continue
    [ "$need" = optional ] || echo "sftsan-io cannot load $ko"
done </etc/sftsan-bench/modules
until [ -b /dev/vda ]; do usleep 10000; done
set -o pipefail
pass=0
while :; do
    pass=$((pass + 1))
    if sum=$(dd if=/dev/vda bs=1M iflag=direct 2>/tmp/dd.err | sha256sum); then
        echo "sftsan-io pass $pass ${sum%% *}"
    else
        echo "sftsan-io pass $pass FAILED $(tr '\n' ' ' </tmp/dd.err)"
    fi
done
"#;

/// One newc (SVR4 without CRC) cpio member; the kernel unpacks such an archive appended
/// to a compressed initramfs.
fn cpio_member(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let fields = [0, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0];
    let mut header = String::from("070701");
    for f in fields {
        header += &format!("{f:08X}");
    }
    header += &format!("{:08X}{:08X}", name.len() + 1, 0);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The boot image's kernel and initramfs, built by its script when missing.
fn boot_image() -> (PathBuf, PathBuf) {
    let dir = Path::new(BOOT_IMAGE);
    if !dir.join("manifest.json").is_file() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sftsan-bench/boot-image/build");
        let out = Command::new("bash").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "building the boot image failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let file = |key: &str| dir.join(manifest[key].as_str().expect(key));
    (file("vmlinuz"), file("initrd"))
}

/// A reading guest's files, in a directory of the test's.
pub struct ReadingGuest {
    kernel: PathBuf,
    initrd: PathBuf,
    /// Where its serial console goes (libvirt writes it).
    pub console: PathBuf,
}

impl ReadingGuest {
    /// The guest's kernel, initramfs and console file in `dir` (which QEMU's user must be
    /// able to reach). Copies: libvirt gives a guest's kernel and initramfs to QEMU's user
    /// while it runs, and the boot image is shared.
    pub fn new(dir: &Path) -> ReadingGuest {
        let (kernel, base_initrd) = boot_image();
        let guest = ReadingGuest {
            kernel: dir.join("vmlinux"),
            initrd: dir.join("initrd.img"),
            console: dir.join("console.log"),
        };
        std::fs::copy(&kernel, &guest.kernel).unwrap();
        let mut initrd = std::fs::read(&base_initrd).unwrap();
        initrd.resize(initrd.len().next_multiple_of(4), 0);
        cpio_member(&mut initrd, "init", 0o100755, INIT.as_bytes());
        cpio_member(&mut initrd, "TRAILER!!!", 0, b"");
        std::fs::write(&guest.initrd, initrd).unwrap();
        guest
    }

    /// A domain template for `sftsan vm define --template`: no disk of its own, so sftsan
    /// gives the VM its snapshot as vda, with its error policies.
    pub fn template(&self) -> String {
        format!(
            "<domain type='qemu'>
  <name>t</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{}</kernel>
    <initrd>{}</initrd>
    <cmdline>console=ttyS0 loglevel=4 panic=-1 no_timer_check</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'>
      <source path='{}'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>
",
            self.kernel.display(),
            self.initrd.display(),
            self.console.display()
        )
    }

    /// The passes the guest printed, (pass, digest or "FAILED ..."), and its other lines.
    pub fn console(&self) -> (Vec<(u32, String)>, Vec<String>) {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let (mut passes, mut other) = (vec![], vec![]);
        for line in text.lines() {
            let mut words = line.trim().splitn(4, ' ');
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("sftsan-io"), Some("pass"), Some(n), Some(rest))
                    if n.parse::<u32>().is_ok() =>
                {
                    passes.push((n.parse().unwrap(), rest.trim().to_string()));
                }
                _ if line.trim().is_empty() => {}
                _ => other.push(line.to_string()),
            }
        }
        (passes, other)
    }

    /// The number of the last pass printed (0 before the first).
    pub fn last_pass(&self) -> u32 {
        self.console().0.last().map_or(0, |p| p.0)
    }

    /// The console lines that tell of an error the guest saw.
    pub fn errors(&self) -> Vec<String> {
        let (passes, other) = self.console();
        passes
            .iter()
            .filter(|(_, rest)| rest.starts_with("FAILED"))
            .map(|(n, rest)| format!("pass {n} {rest}"))
            .chain(
                other
                    .into_iter()
                    .filter(|l| l.to_lowercase().contains("error")),
            )
            .collect()
    }
}
