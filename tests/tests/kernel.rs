//! Kernel-path tests. On a kernel without device-mapper, loop, LIO or iSCSI they skip with
//! the missing features named; the kernel tier (tests/kernel-vm/run) runs them in a guest
//! booting a stock Debian kernel, where nothing may be missing.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use devicemapper::{DevId, DmName, DmOptions, DM};
use loopdev::{LoopControl, LoopDevice};
use sftsan_core::backends::kernel::probe::{self, Feature};
use sftsan_tests::{block_device_path, in_kernel_tier, require_kernel, MIB};

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn the_kernel_has_what_a_kernel_backend_node_needs() {
    let missing = probe::missing(probe::NODE_FEATURES);
    assert_eq!(probe::report(&missing), None);
}

/// A loop device and a dm device, removed when dropped (also when the test fails).
struct Devices {
    dm: Option<(DM, String)>,
    loop_dev: Option<LoopDevice>,
}

impl Drop for Devices {
    fn drop(&mut self) {
        if let Some((dm, name)) = &self.dm {
            let name = DmName::new(name).unwrap();
            let _ = dm.device_remove(&DevId::Name(name), DmOptions::default());
        }
        if let Some(l) = &self.loop_dev {
            let _ = l.detach();
        }
    }
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn dm_linear_over_a_loop_device_reads_and_writes_through() {
    let needs = [
        Feature::DeviceMapper,
        Feature::DmTarget("linear"),
        Feature::Loop,
    ];
    require_kernel(&needs);
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk.img");
    fs::File::create(&backing)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();

    let mut devs = Devices {
        dm: None,
        loop_dev: None,
    };
    let ld = LoopControl::open().unwrap().next_free().unwrap();
    ld.with().part_scan(false).attach(&backing).unwrap();
    let (lmaj, lmin) = (ld.major().unwrap(), ld.minor().unwrap());
    devs.loop_dev = Some(ld);

    let dm = DM::new().unwrap();
    let name = format!("sftsan-test-linear-{}", std::process::id());
    let dm_name = DmName::new(&name).unwrap();
    let info = dm
        .device_create(dm_name, None, DmOptions::default())
        .unwrap();
    let sectors = 16 * MIB / 512;
    let table = [(0, sectors, "linear".to_string(), format!("{lmaj}:{lmin} 0"))];
    dm.table_load(&DevId::Name(dm_name), &table, DmOptions::default())
        .unwrap();
    dm.device_suspend(&DevId::Name(dm_name), DmOptions::default())
        .unwrap(); // resume
    let dev = info.device();
    devs.dm = Some((dm, name));

    // Write through the dm device, read back from the file under the loop device.
    let path = block_device_path(dev.major, dev.minor);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(MIB)).unwrap();
    f.write_all(&pattern).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut back = vec![0u8; pattern.len()];
    let mut file = fs::File::open(&backing).unwrap();
    file.seek(SeekFrom::Start(MIB)).unwrap();
    file.read_exact(&mut back).unwrap();
    assert_eq!(
        back,
        pattern,
        "data written to {} is not in the backing file",
        path.display()
    );

    drop(devs);
    let left = DM::new().unwrap().list_devices().unwrap();
    assert!(
        left.iter()
            .all(|(n, ..)| n.to_string() != format!("sftsan-test-linear-{}", std::process::id())),
        "the dm device outlived its test"
    );
}

/// A device's event, not the slow re-check, wakes a waiter: the waiter has looked once
/// (nothing there), then a loop device is attached, and the wait ends well within the
/// re-check interval.
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn a_block_devices_event_wakes_a_waiter() {
    use sftsan_core::backends::kernel::loopback;
    use sftsan_core::backends::kernel::uevents::{DeviceEvents, Source, RECHECK};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    require_kernel(&[Feature::Loop]);
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk.img");
    fs::File::create(&backing).unwrap().set_len(MIB).unwrap();
    let mut devs = Devices {
        dm: None,
        loop_dev: None,
    };
    let events = DeviceEvents::subscribe(&["block"]).unwrap();
    if in_kernel_tier() {
        assert_eq!(events.source(), Source::Kernel, "the guest runs no udevd");
    }
    let (looked, attach) = mpsc::channel::<()>();
    let (attached_tx, attached_rx) = mpsc::channel();
    let file = backing.clone();
    let attacher = std::thread::spawn(move || {
        attach.recv().unwrap();
        let ld = LoopControl::open().unwrap().next_free().unwrap();
        ld.with().part_scan(false).attach(&file).unwrap();
        attached_tx.send(Instant::now()).unwrap();
        ld
    });
    let mut first = true;
    let found = events
        .wait_until(Duration::from_secs(30), || {
            if first {
                first = false;
                looked.send(()).unwrap();
                return None;
            }
            loopback::find(&backing)
        })
        .unwrap();
    let woke = Instant::now();
    devs.loop_dev = Some(attacher.join().unwrap());
    assert!(found.is_some(), "the loop device was not seen");
    let after = woke - attached_rx.recv().unwrap();
    assert!(
        after < RECHECK,
        "woken {after:?} after the attach: by the re-check, not by the device's event"
    );
    drop(devs);
}
