//! Node stores on block devices the spec names (`[nodes.devices]`), as an operator hands
//! sftsan LVs or disks; here loop devices over the test's own files. A named device is
//! claimed by a dm device of the cluster while in use, survives a reboot with its content,
//! and is given back with its first MiB cleared; a device that cannot be a store (missing,
//! not a block device, too small, in use, holding a partition table) is refused in one
//! line naming its field, and nothing is left.

mod kernel_support;

use kernel_support::*;
use sftsan_tests::MIB;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The dm devices holding block device `path` (its sysfs holders).
fn holders(path: &Path) -> Vec<String> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    fs::read_dir(format!("/sys/block/{name}/holders"))
        .unwrap()
        .flatten()
        .filter_map(|h| fs::read_to_string(h.path().join("dm/name")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// Stores named by `devices` (node, field, disk) are claimed while the cluster is up, the
/// VM disks read the image and keep their writes over a reboot, and `down` gives every
/// disk back cleared and unclaimed.
fn run_on_disks(
    name: &str,
    kind: &str,
    cache: &str,
    disks: &TestDisks,
    nodes: &[(&str, String)],
    disk_name: &str,
) {
    let c = cluster_with(name, kind, "lio", cache, nodes);
    require_ready(&c);
    // Bytes that are no signature, where sftsan writes its metadata: it clears them.
    for i in 0..disks.disks.len() {
        disks.write(i, 0, &[0x77; 4096]);
    }
    c.engine.up().unwrap_or_else(|e| panic!("up: {e}"));
    let prefix = format!("sftsan-{name}-");
    for i in 0..disks.disks.len() {
        let held = holders(&disks.path(i));
        assert!(
            held.len() == 1 && held[0].starts_with(&prefix) && held[0].contains("-dev-"),
            "disk {i} is held by {held:?}"
        );
    }
    let nodes: Vec<&str> = nodes.iter().map(|(n, _)| *n).collect();
    for node in &nodes {
        for i in 1..=2 {
            let d = disk(&c, node, &format!("{disk_name}-{i}"));
            assert_eq!(sha256(&d), c.sha, "{node}'s disk {i} reads the image");
        }
    }
    let written = disk(&c, nodes[0], &format!("{disk_name}-1"));
    write_at(&written, 5 * MIB, &[0xe1; 8192]);
    assert_eq!(
        sha256(&disk(&c, nodes[0], &format!("{disk_name}-2"))),
        c.sha,
        "a write stays in its own disk"
    );

    power_cut(&c);
    for i in 0..disks.disks.len() {
        assert!(holders(&disks.path(i)).is_empty(), "disk {i} still claimed");
    }
    c.engine
        .up()
        .unwrap_or_else(|e| panic!("up after a reboot: {e}"));
    let written = disk(&c, nodes[0], &format!("{disk_name}-1"));
    assert_eq!(
        read_at(&written, 5 * MIB, 8192),
        vec![0xe1; 8192],
        "the VM's write on a named device survived the reboot"
    );

    c.engine.down().unwrap_or_else(|e| panic!("down: {e}"));
    assert_nothing_left(name);
    for i in 0..disks.disks.len() {
        assert!(holders(&disks.path(i)).is_empty(), "disk {i} still claimed");
        let head = disks.head(i, MIB as usize);
        assert!(
            head.iter().all(|&b| b == 0),
            "disk {i}'s first MiB was not cleared"
        );
    }
    assert!(
        !c._dir.path().join("state").exists(),
        "down left the state directory (or something in it)"
    );
}

fn devices_line(fields: &[(&str, String)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("devices = {{ {} }}", inner.join(", "))
}

fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// n1 keeps its dm-cache and one VM's COW on disks, n2 both VMs' COWs; n3 (below n1) uses
/// files.
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn dm_cache_and_snapshots_on_named_devices() {
    require_kernel_ready();
    let disks = TestDisks::new(&[IMAGE, 16 * MIB, 4 * MIB, 4 * MIB, 4 * MIB]);
    let n1 = devices_line(&[
        ("cache", quoted(&disks.path(0))),
        ("cache_metadata", quoted(&disks.path(1))),
        ("cow", format!("[{}]", quoted(&disks.path(2)))),
    ]);
    let n2 = devices_line(&[(
        "cow",
        format!("[{}, {}]", quoted(&disks.path(3)), quoted(&disks.path(4))),
    )]);
    run_on_disks(
        "kd-snap",
        "dm-snapshot",
        "dm-cache",
        &disks,
        &[("n1", n1), ("n2", n2), ("n3", String::new())],
        "snap",
    );
}

/// n1 keeps its dm-clone copy and thin pool on disks; n2 uses files. The copy on the disk
/// ends up holding the image.
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn dm_clone_and_a_thin_pool_on_named_devices() {
    require_kernel_ready();
    let disks = TestDisks::new(&[IMAGE, 16 * MIB, 2 * IMAGE, 8 * MIB]);
    let n1 = devices_line(&[
        ("cache", quoted(&disks.path(0))),
        ("cache_metadata", quoted(&disks.path(1))),
        ("thin_data", quoted(&disks.path(2))),
        ("thin_metadata", quoted(&disks.path(3))),
    ]);
    run_on_disks(
        "kd-thin",
        "dm-thin",
        "dm-clone",
        &disks,
        &[("n1", n1), ("n2", String::new())],
        "thin",
    );
}

/// `up` with one device that cannot be n1's cache; returns its one-line error.
fn refused(name: &str, cache: &Path, cache_metadata: &Path) -> String {
    let n1 = devices_line(&[
        ("cache", quoted(cache)),
        ("cache_metadata", quoted(cache_metadata)),
    ]);
    let c = cluster_with(name, "dm-snapshot", "lio", "dm-cache", &[("n1", n1)]);
    let spec = spec_file(&c);
    let up = sftsan_cli(&[OsStr::new("up"), spec.as_os_str()], &[]);
    let err = error_line(&up);
    assert_nothing_left(name);
    assert!(!c.names.journal().exists(), "a refused up left a journal");
    err
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn devices_that_cannot_be_stores_are_refused_by_field() {
    require_kernel_ready();
    let disks = TestDisks::new(&[IMAGE, 16 * MIB, MIB]);
    let (cache, meta, small) = (disks.path(0), disks.path(1), disks.path(2));

    // Checked before anything is touched.
    let err = refused("kd-small", &cache, &small);
    assert!(
        err.contains(&format!(
            "nodes[0].devices.cache_metadata: {} holds {MIB} bytes; it must hold at least",
            small.display()
        )),
        "{err}"
    );
    let missing = Path::new("/dev/sftsan-no-such-disk");
    let err = refused("kd-missing", missing, &meta);
    assert!(
        err.contains("nodes[0].devices.cache: /dev/sftsan-no-such-disk does not exist"),
        "{err}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(IMAGE).unwrap();
    let err = refused("kd-file", file.path(), &meta);
    assert!(
        err.contains(&format!(
            "nodes[0].devices.cache: {} is not a block device",
            file.path().display()
        )),
        "{err}"
    );

    // Checked when the store is taken: the up is rolled back.
    let held = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&cache)
        .unwrap();
    let err = refused("kd-busy", &cache, &meta);
    assert!(
        err.contains(&format!(
            "nodes[0].devices.cache: {} is in use",
            cache.display()
        )),
        "{err}"
    );
    drop(held);

    // A DOS partition table with one Linux partition: someone's disk, not sftsan's.
    let mut mbr = vec![0u8; 512];
    mbr[446..462].copy_from_slice(&[
        0x00, 0, 0, 0, 0x83, 0, 0, 0, 0x00, 0x08, 0, 0, 0x00, 0x08, 0, 0,
    ]);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    disks.write(0, 0, &mbr);
    let err = refused("kd-parted", &cache, &meta);
    assert!(
        err.contains(&format!(
            "nodes[0].devices.cache: {} holds a dos partition table; sftsan only takes over blank devices",
            cache.display()
        )),
        "{err}"
    );
    assert_eq!(disks.head(0, 512), mbr, "the partition table was touched");
}
