//! sftsan-libvirt against a real libvirtd with QEMU (TCG): batches through `sftsan vm`, the
//! hook as libvirt runs it, and libvirt's own XML read back. Needs root; see common/mod.rs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use sftsan_libvirt::identity::{vm_mac, vm_uuid};
use sftsan_libvirt::libvirt::DomainState;
use sftsan_libvirt::vms::{build_domain, default_template};
use sftsan_libvirt::xml::{SftsanMeta, VmMode};

fn table_rows(out: &std::process::Output) -> Vec<String> {
    stdout(out)
        .lines()
        .skip(1)
        .filter(|l| l.contains(" n"))
        .map(String::from)
        .collect()
}

/// Six VMs over three nodes (binary tree), defined from the example template and started
/// as one batch (3 at a time, 300 ms apart); every guest reads the whole image through its
/// snapshot; libvirt's XML parses back with sftsan's metadata and the template's unknown
/// elements intact; the pools show the snapshots; undefine removes everything.
#[test]
#[ignore = "root tier: needs root, libvirtd and QEMU (scripts/test.sh runs it)"]
fn a_batch_of_six_vms_boots_from_the_cluster() {
    require_libvirt();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvbatch", 1, 3, 2, 2, &lvd.uri);
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/libvirt/domain.xml");
    let template = template.to_str().unwrap();

    let t = Instant::now();
    let out = c.vm("define", &["--template", template, "--concurrency", "3"]);
    let define_time = t.elapsed();
    assert!(
        out.status.success(),
        "define failed:\n{}{}\n{}",
        stdout(&out),
        stderr(&out),
        lvd.logs()
    );
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 6, "{}", stdout(&out));
    assert!(
        rows.iter().all(|r| r.contains(" defined ")),
        "{}",
        stdout(&out)
    );
    eprintln!(
        "define of 6 VMs (snapshots, domains, pools): {:.1}s",
        define_time.as_secs_f64()
    );

    let lv = lvd.connect();
    for node in ["n1", "n2", "n3"] {
        let pool = format!("sftsan-lvbatch-{node}-base");
        assert_eq!(
            lv.pool_volumes(&pool).unwrap(),
            ["base-1.qcow2", "base-2.qcow2"],
            "{pool}"
        );
        for index in 1..=2 {
            let name = format!("lvbatch-{node}-{index}");
            let d = lv.domain(&name).unwrap();
            assert_eq!(
                d.uuid().as_deref(),
                Some(vm_uuid("lvbatch", node, index).as_str())
            );
            let meta = d.sftsan().expect("sftsan metadata after define");
            assert_eq!(
                (meta.node.as_str(), meta.snapshot, meta.mode),
                (node, index, VmMode::Persistent)
            );
            assert_eq!(meta.image, "base");
            assert_eq!(Path::new(&meta.spec), c.spec_path);
            assert_eq!(
                d.macs()[0].as_deref(),
                Some(vm_mac("lvbatch", node, index, 0).as_str())
            );
            assert_eq!(
                d.disks()[0].path.as_deref(),
                Some(c.names.snapshot_file(node, index).to_str().unwrap())
            );
            assert!(d.disks()[0].stops_on_error(), "{}", d.to_xml());
            // What the template had and sftsan does not model survived libvirt.
            let root = d.root();
            let metadata = root.child("metadata").unwrap();
            assert!(
                metadata.elements().any(|m| m.text().contains("team-a")),
                "{name}: {metadata:?}"
            );
            assert!(root.child("clock").is_some(), "{name}");
            let devices = root.child("devices").unwrap();
            assert!(devices.child("serial").is_some(), "{name}");
            // And it writes back to the same thing.
            let again = sftsan_libvirt::xml::Domain::from_xml(&d.to_xml()).unwrap();
            assert_eq!(again, d);
        }
    }

    let t = Instant::now();
    let out = c.vm("start", &["--concurrency", "3", "--interval", "300ms"]);
    let start_time = t.elapsed();
    assert!(
        out.status.success(),
        "start failed:\n{}{}\n{}",
        stdout(&out),
        stderr(&out),
        lvd.logs()
    );
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 6, "{}", stdout(&out));
    assert!(
        rows.iter().all(|r| r.contains(" started ")),
        "{}",
        stdout(&out)
    );
    // Boot queueing: six starts 300 ms apart take at least 1.5 s.
    assert!(start_time >= Duration::from_millis(1500), "{start_time:?}");
    eprintln!("start of 6 VMs: {:.1}s", start_time.as_secs_f64());

    for node in ["n1", "n2", "n3"] {
        for index in 1..=2 {
            let name = format!("lvbatch-{node}-{index}");
            assert_eq!(lv.state(&name).unwrap(), DomainState::Running);
            guest_reads_the_image(lvd, &lv, &name, c.image_size)
                .unwrap_or_else(|e| panic!("{e}\n{}", lvd.logs()));
        }
    }
    // Each start went through the hook's prepare (installed twice: qemu and qemu.d).
    let log = lvd.hook_log();
    assert!(
        log.lines()
            .filter(|l| l.contains("lvbatch-n2-1 prepare begin") && l.contains("ready"))
            .count()
            >= 2,
        "{log}"
    );

    let out = c.vm("list", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        table_rows(&out)
            .iter()
            .filter(|r| r.contains("running, snapshot present, persistent"))
            .count(),
        6,
        "{}",
        stdout(&out)
    );

    let out = c.vm_ok("undefine", &["--remove-snapshots"]);
    assert!(
        table_rows(&out)
            .iter()
            .all(|r| r.contains("destroyed, undefined, snapshot removed")),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("pool sftsan-lvbatch-n1-base: removed"),
        "{}",
        stdout(&out)
    );
    assert!(lv
        .sftsan_domains()
        .unwrap()
        .iter()
        .all(|d| d.sftsan().unwrap().cluster != "lvbatch"));
    for node in ["n1", "n2", "n3"] {
        assert!(!c.names.snapshot_file(node, 1).exists());
    }
}

fn domain_for(
    c: &TestCluster,
    node: &str,
    index: u32,
    mode: VmMode,
) -> sftsan_libvirt::xml::Domain {
    let meta = SftsanMeta {
        cluster: c.name.clone(),
        image: "base".into(),
        node: node.into(),
        snapshot: index,
        mode,
        spec: c.spec_path.display().to_string(),
    };
    let name = format!("{}-{node}-{index}", c.name);
    build_domain(
        &default_template(),
        &name,
        &c.names.snapshot_file(node, index),
        meta,
    )
    .unwrap()
}

/// A domain defined (by plain libvirt, no sftsan command) for a node that has no stack yet
/// starts: libvirt's prepare hook brings the node (and its parent) up and makes the
/// snapshot, and the guest reads the image.
#[test]
#[ignore = "root tier: needs root, libvirtd and QEMU (scripts/test.sh runs it)"]
fn the_hook_brings_up_a_node_for_a_starting_domain() {
    require_libvirt();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvhook", 2, 2, 1, 1, &lvd.uri);
    let lv = lvd.connect();
    let d = domain_for(&c, "n2", 1, VmMode::Persistent);
    lv.define(&d).unwrap();
    assert!(!c.node_is_up("n1") && !c.node_is_up("n2"));
    assert!(!c.names.snapshot_file("n2", 1).exists());

    let t = Instant::now();
    lv.start(&d.name())
        .unwrap_or_else(|e| panic!("{e}\n{}", lvd.logs()));
    eprintln!(
        "start with the node brought up by the hook: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(c.node_is_up("n1") && c.node_is_up("n2"), "{}", lvd.logs());
    assert!(c.names.snapshot_file("n2", 1).exists());
    guest_reads_the_image(lvd, &lv, &d.name(), c.image_size)
        .unwrap_or_else(|e| panic!("{e}\n{}", lvd.logs()));

    // A second start after a stop finds everything there (idempotent); persistent VMs
    // keep their writes.
    guest_writes(lvd, &lv, &d.name(), 0xee, 0, 65536).unwrap();
    lv.destroy(&d.name()).unwrap();
    assert!(
        c.names.snapshot_file("n2", 1).exists(),
        "a persistent VM keeps its disk"
    );
    lv.start(&d.name())
        .unwrap_or_else(|e| panic!("{e}\n{}", lvd.logs()));
    guest_reads(lvd, &lv, &d.name(), 0xee, 0, 65536).unwrap();
    lv.destroy(&d.name()).unwrap();
}

/// A stateless domain's writes are gone after a stop and a start: the release hook drops
/// the snapshot, the prepare hook makes a fresh one.
#[test]
#[ignore = "root tier: needs root, libvirtd and QEMU (scripts/test.sh runs it)"]
fn a_stateless_domain_forgets_its_writes() {
    require_libvirt();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvstateless", 3, 1, 1, 1, &lvd.uri);
    c.vm_ok("define", &["--mode", "stateless"]);
    let lv = lvd.connect();
    let name = "lvstateless-n1-1";
    assert_eq!(
        lv.domain(name).unwrap().sftsan().unwrap().mode,
        VmMode::Stateless
    );

    lv.start(name)
        .unwrap_or_else(|e| panic!("{e}\n{}", lvd.logs()));
    guest_writes(lvd, &lv, name, 0xee, 0, 65536).unwrap();
    guest_reads(lvd, &lv, name, 0xee, 0, 65536).unwrap();
    // (the check can fail: the old contents are gone from the guest's view)
    let err = guest_reads(lvd, &lv, name, pattern(0), 0, 65536).unwrap_err();
    assert!(err.contains("Pattern verification failed"), "{err}");
    lv.destroy(name).unwrap();
    assert!(
        !c.names.snapshot_file("n1", 1).exists(),
        "release should discard the snapshot\n{}",
        lvd.logs()
    );
    assert!(
        lvd.hook_log()
            .contains(&format!("{name} release end: n1/snapshot/1 discarded")),
        "{}",
        lvd.logs()
    );

    lv.start(name)
        .unwrap_or_else(|e| panic!("{e}\n{}", lvd.logs()));
    guest_reads(lvd, &lv, name, pattern(0), 0, 65536).unwrap();
    guest_reads_the_image(lvd, &lv, name, c.image_size).unwrap();
    lv.destroy(name).unwrap();
}

/// A prepare the hook cannot serve aborts the start, and libvirt's error carries the hook's
/// one-line message.
#[test]
#[ignore = "root tier: needs root, libvirtd and QEMU (scripts/test.sh runs it)"]
fn a_failing_prepare_aborts_the_start() {
    require_libvirt();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvfail", 4, 1, 1, 1, &lvd.uri);
    let lv = lvd.connect();
    let d = domain_for(&c, "ghost", 1, VmMode::Persistent);
    lv.define(&d).unwrap();
    let err = lv
        .start(&d.name())
        .expect_err("the start must fail")
        .to_string();
    eprintln!("libvirt said: {err}");
    assert!(err.contains("sftsan-hook: lvfail-ghost-1:"), "{err}");
    assert!(err.contains("no node named \"ghost\""), "{err}");
    assert_eq!(lv.state(&d.name()).unwrap(), DomainState::Stopped);
    assert!(!c.node_is_up("n1"));
    lv.undefine(&d.name()).unwrap();
}

/// Defines are fast: capabilities are probed once per daemon, not once per define.
#[test]
#[ignore = "root tier: needs root, libvirtd and QEMU (scripts/test.sh runs it)"]
fn defines_do_not_reprobe_qemu() {
    require_libvirt();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvprobe", 5, 1, 1, 1, &lvd.uri);
    let lv = lvd.connect();
    let mut times = Vec::new();
    for i in 1..=4 {
        let d = domain_for(&c, "n1", i, VmMode::Persistent);
        let t = Instant::now();
        lv.define(&d).unwrap();
        times.push(t.elapsed());
        lv.undefine(&d.name()).unwrap();
    }
    eprintln!(
        "define times (/dev/kvm {}): {times:?}",
        if lvd.kvm_hidden { "hidden" } else { "visible" }
    );
    if lvd.kvm_hidden {
        // The first may pay for the one probe; the rest must not.
        assert!(
            times[1..].iter().all(|t| *t < Duration::from_secs(2)),
            "{times:?}"
        );
    }
}

/// `sftsan vm` is a subcommand of the one `sftsan` program, here against
/// libvirt's test driver (no root, no libvirtd needed).
#[test]
fn sftsan_vm_runs_as_a_subcommand_of_sftsan() {
    let c = TestCluster::create("lvcli", 6, 2, 1, 1, "test:///default");
    let out = std::process::Command::new(sftsan_bin())
        .args(["vm", "list"])
        .arg(&c.spec_path)
        .args([
            "--connect",
            "test:///default",
            "--name",
            "vm-{node}x{index}",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("VM "), "{text}");
    assert!(
        text.contains("vm-n1x1") && text.contains("vm-n2x1"),
        "{text}"
    );
    assert!(text.contains("undefined, no snapshot"), "{text}");
    assert!(text.contains("list: 2 VMs, 0 failed"), "{text}");
    let out = std::process::Command::new(sftsan_bin())
        .args(["vm", "list"])
        .arg(&c.spec_path)
        .args(["--connect", "test:///default", "--node", "origin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is the origin"), "{}", stderr(&out));
}

/// libvirtd restarted under a running sftsan guest: its `reconnect begin` hook succeeds
/// (the stack is healthy), the guest keeps running and still reads the image.
#[test]
#[ignore = "root tier: needs root, libvirtd and QEMU (scripts/test.sh runs it)"]
fn a_libvirtd_restart_reconnects_running_guests() {
    require_libvirt();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvreconnect", 7, 1, 1, 1, &lvd.uri);
    c.vm_ok("define", &[]);
    c.vm_ok("start", &[]);
    let name = "lvreconnect-n1-1";

    lvd.restart_libvirtd();
    let lv = lvd.connect();
    // libvirtd reconnects to its guests in threads of their own, after it answers.
    let want = format!("{name} reconnect begin: n1/snapshot/1 healthy");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lvd.hook_log().contains(&want) {
        assert!(
            Instant::now() < deadline,
            "no reconnect hook\n{}",
            lvd.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        lv.state(name).unwrap(),
        DomainState::Running,
        "{}",
        lvd.logs()
    );
    guest_reads_the_image(lvd, &lv, name, c.image_size).unwrap();
    c.vm_ok("destroy", &[]);
}

/// `sftsan vm list` and `sftsan vm xml` into a reader that is gone before they write
/// (`sftsan vm list SPEC | head -1`): exit 0 and nothing on stderr, as for every command
/// that prints. libvirt's test driver: no root needed.
#[test]
fn vm_commands_end_quietly_on_a_closed_pipe() {
    let c = TestCluster::create("lvpipe", 8, 2, 1, 1, "test:///default");
    let spec = c.spec_path.to_str().unwrap();
    for args in [
        vec!["list", spec, "--connect", "test:///default"],
        vec!["xml", spec, "--node", "n2"],
        vec!["--help"],
    ] {
        let mut cmd = std::process::Command::new(sftsan_bin());
        cmd.arg("vm").args(&args);
        let out = sftsan_tests::run_into_closed_pipe(&mut cmd);
        sftsan_tests::assert_quiet_on_closed_pipe(&out, &format!("sftsan vm {}", args.join(" ")));
    }
}

/// The three template styles from the field define in a real libvirtd through `sftsan vm
/// define --template`, and libvirt's own XML keeps what they had: the original sftsan's
/// (file disk on a dm path, cdrom, bridge NIC with a MAC, VNC), a Windows guest (Hyper-V
/// features, local-time clock, several disks on SATA, a USB tablet) and one with its own
/// boot disk (virtio-scsi, boot order, driver options).
#[test]
#[ignore = "root tier: needs root, libvirtd and QEMU (scripts/test.sh runs it)"]
fn templates_from_the_field_define_in_libvirt() {
    require_libvirt();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvtmpl", 9, 1, 1, 1, &lvd.uri);
    let lv = lvd.connect();
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/libvirt/templates");
    let snapshot = c.names.snapshot_file("n1", 1).display().to_string();
    for (file, boot_target, kept) in [
        ("seed-style.xml", "vda", vec!["graphics", "video", "input"]),
        ("windows.xml", "sda", vec!["input", "graphics", "channel"]),
        (
            "own-boot-disk.xml",
            "sda",
            vec!["controller", "serial", "memballoon"],
        ),
    ] {
        // This host runs guests under TCG only: what a KVM host's template names for KVM
        // becomes its TCG equivalent, as an operator here would write it.
        let text = std::fs::read_to_string(templates.join(file))
            .unwrap()
            .replace("<domain type='kvm'", "<domain type='qemu'")
            .replace("/usr/bin/kvm", "/usr/bin/qemu-system-x86_64");
        let template = c.work.path().join(file);
        std::fs::write(&template, text).unwrap();
        let out = c.vm("define", &["--template", template.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{file}: {}{}\n{}",
            stdout(&out),
            stderr(&out),
            lvd.logs()
        );
        let d = lv.domain("lvtmpl-n1-1").unwrap();
        let boot: Vec<_> = d
            .disks()
            .into_iter()
            .filter(|disk| disk.target.as_deref() == Some(boot_target))
            .collect();
        assert_eq!(boot.len(), 1, "{file}: {}", d.to_xml());
        assert_eq!(boot[0].path.as_deref(), Some(snapshot.as_str()), "{file}");
        assert_eq!(boot[0].format.as_deref(), Some("qcow2"), "{file}");
        assert!(boot[0].stops_on_error(), "{file}: {}", d.to_xml());
        assert_eq!(
            d.macs()[0].as_deref(),
            Some(vm_mac("lvtmpl", "n1", 1, 0).as_str())
        );
        let devices = d.root().child("devices").unwrap();
        for element in kept {
            assert!(
                devices.child(element).is_some(),
                "{file}: <{element}> lost: {}",
                d.to_xml()
            );
        }
        if file == "windows.xml" {
            let features = d.root().child("features").unwrap();
            assert!(features.child("hyperv").is_some(), "{}", d.to_xml());
            assert_eq!(
                d.root().child("clock").unwrap().attr("offset"),
                Some("localtime")
            );
            assert_eq!(d.disks().len(), 3);
        }
        c.vm_ok("undefine", &[]);
    }
}

/// A kernel-backend VM's domain, as `sftsan vm xml` writes it (a raw block disk,
/// `/dev/mapper/...`), goes through the same hook path in a real libvirtd as a file disk:
/// prepare reads the block disk, finds it is the VM's snapshot and asks the engine for it,
/// and release discards a stateless VM's snapshot. This host's kernel has no
/// device-mapper, so the engine's probe refuses the prepare here with its one line; the
/// kernel tier (`kernel_hook`) runs the hook over the real dm stack.
#[test]
#[ignore = "root tier: needs root, libvirtd and QEMU (scripts/test.sh runs it)"]
fn the_hook_serves_kernel_backend_domains() {
    require_libvirt();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvkernel", 10, 1, 1, 1, &lvd.uri);
    let text = std::fs::read_to_string(&c.spec_path)
        .unwrap()
        .replace("mode = \"host\"", "mode = \"host\"\nbackend = \"kernel\"")
        .replace("per_node = 1", "per_node = 1\nkind = \"dm-snapshot\"")
        + "\n[kernel]\nchap_user = \"sftsan\"\nchap_secret = \"a-secret-for-the-tests\"\n";
    std::fs::write(&c.spec_path, text).unwrap();
    let spec = c.spec_path.to_str().unwrap();
    let out = sftsan_vm(["xml", spec, "--node", "n1", "--mode", "stateless"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let xml = stdout(&out);
    let d = sftsan_libvirt::xml::Domain::from_xml(&xml).unwrap();
    let disk = &d.disks()[0];
    assert_eq!(disk.kind, "block", "{xml}");
    let dev = disk.path.clone().unwrap();
    assert!(dev.starts_with("/dev/mapper/sftsan-lvkernel-n1-"), "{xml}");

    let lv = lvd.connect();
    let name = "lvkernel-n1-1";
    lv.define_xml(name, &xml).unwrap();
    let err = lv
        .start(name)
        .expect_err("no device-mapper here: the start must fail")
        .to_string();
    lv.undefine(name).unwrap();
    assert!(err.contains(&format!("sftsan-hook: {name}:")), "{err}");
    assert!(
        !err.contains("no disk is"),
        "the hook refused the block disk: {err}"
    );
    let log = lvd.hook_log();
    let prepare = log
        .lines()
        .find(|l| l.contains(&format!("{name} prepare begin: FAILED")))
        .unwrap_or_else(|| panic!("no prepare in the hook's log\n{}", lvd.logs()));
    eprintln!("hook: {prepare}");
    assert!(
        prepare.contains("device-mapper") || prepare.contains("kernel"),
        "the engine's kernel probe answered: {prepare}"
    );
    assert!(
        log.contains(&format!(
            "{name} release end: n1/snapshot/1 already gone (stateless)"
        )),
        "release took the stateless path:\n{}",
        lvd.logs()
    );
    assert!(!c.node_is_up("n1"));
    assert!(!Path::new(&dev).exists());
}

/// A template sftsan cannot use is refused with one line that names the file and says
/// why, before anything is made.
#[test]
fn an_unusable_template_gets_one_line() {
    let c = TestCluster::create("lvbadtmpl", 11, 1, 1, 1, "test:///default");
    let spec = c.spec_path.to_str().unwrap();
    for (text, why) in [
        (
            "<domain type='kvm'>\n  <devices>\n</domain>\n",
            "line 3: ill-formed document: expected `</devices>`, but `</domain>` was found",
        ),
        (
            "<domain>\n  <name>x</name>\n</domain>\n",
            "<domain> has no type attribute",
        ),
    ] {
        let template = c.work.path().join("bad.xml");
        std::fs::write(&template, text).unwrap();
        let path = template.to_str().unwrap();
        for args in [
            vec!["xml", spec, "--node", "n1", "--template", path],
            vec![
                "define",
                spec,
                "--connect",
                "test:///default",
                "--template",
                path,
            ],
        ] {
            let out = sftsan_vm(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let err = stderr(&out);
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(
                err.starts_with(&format!("sftsan vm: template {path}: {why}")),
                "{err}"
            );
        }
    }
    assert!(!c.names.snapshot_file("n1", 1).exists(), "nothing was made");
}

/// `sftsan vm resume` against libvirt's test driver (no root): a cluster without domains
/// gets the empty table; a VM that is not one of the cluster's, or the origin as a node,
/// is refused with one line before anything is done.
#[test]
fn vm_resume_names_what_it_cannot_find() {
    let c = TestCluster::create("lvresume", 13, 2, 1, 1, "test:///default");
    let out = c.vm("resume", &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("VM "), "{text}");
    assert!(text.contains("resume: 0 VMs, 0 failed"), "{text}");
    for (args, want) in [
        (
            vec!["lvresume-n1-1"],
            "sftsan vm: domain lvresume-n1-1: not one of cluster lvresume's domains",
        ),
        (
            vec!["--node", "origin"],
            "sftsan vm: \"origin\": is the origin: VMs run on compute nodes",
        ),
    ] {
        let out = c.vm("resume", &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with(want), "{err}");
    }
}
