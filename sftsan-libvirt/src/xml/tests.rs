use super::*;
use crate::identity::{vm_mac, vm_uuid};
use crate::vms::{build_domain, default_template, parse_template};
use std::path::Path;

fn meta(node: &str, index: u32) -> SftsanMeta {
    SftsanMeta {
        cluster: "c".into(),
        image: "base".into(),
        node: node.into(),
        snapshot: index,
        mode: VmMode::Stateless,
        spec: "/s.toml".into(),
    }
}

/// The tree without what sftsan owns: name, UUID, MAC addresses, sftsan's metadata
/// element (and a `<metadata>` left empty by its removal), and the boot disk's type,
/// format, error policies, source and backing chain (all of it, when `added`: sftsan
/// added the disk).
/// Written apart from the code under test, so that what it leaves must come through a
/// build unchanged.
fn without_owned_parts(root: &Element, boot_target: &str, added: bool) -> Element {
    let mut root = root.normalized();
    root.remove_children("name");
    root.remove_children("uuid");
    if let Some(metadata) = root.child_mut("metadata") {
        metadata.children.retain(|n| match n {
            Node::Element(e) => e.attr(&format!("xmlns:{SFTSAN_PREFIX}")) != Some(SFTSAN_NS),
            _ => true,
        });
    }
    if root
        .child("metadata")
        .is_some_and(|m| m.children.is_empty())
    {
        root.remove_children("metadata");
    }
    let devices = root.child_mut("devices").expect("templates have devices");
    if added {
        devices
            .children
            .retain(|n| !matches!(n, Node::Element(e) if target_dev(e) == Some(boot_target)));
    }
    for element in devices.elements_mut() {
        match element.name.as_str() {
            "interface" => element.remove_children("mac"),
            "disk" if target_dev(element) == Some(boot_target) => {
                element.attrs.retain(|(n, _)| n != "type");
                element.remove_children("source");
                element.remove_children("backingStore");
                if let Some(driver) = element.child_mut("driver") {
                    driver.attrs.retain(|(n, _)| {
                        !["type", "error_policy", "rerror_policy"].contains(&n.as_str())
                    });
                }
            }
            _ => {}
        }
    }
    root
}

/// Builds VM n1/2 from `template` and checks what changed and that nothing else did.
fn check_round_trip(template_text: &str, boot_target: &str, snapshot: &str) -> Domain {
    let template = parse_template(template_text).unwrap();
    let built = build_domain(&template, "c-n1-2", Path::new(snapshot), meta("n1", 2)).unwrap();
    let text = built.to_xml();
    let back = Domain::from_xml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, built, "{text}");

    assert_eq!(back.name(), "c-n1-2");
    assert_eq!(back.uuid(), Some(vm_uuid("c", "n1", 2)));
    assert_eq!(back.sftsan(), Some(&meta("n1", 2)));
    let macs = back.macs();
    assert!(!macs.is_empty());
    for (n, mac) in macs.iter().enumerate() {
        assert_eq!(
            mac.as_deref(),
            Some(vm_mac("c", "n1", 2, n).as_str()),
            "{text}"
        );
    }
    let boot: Vec<DiskInfo> = back
        .disks()
        .into_iter()
        .filter(|d| d.target.as_deref() == Some(boot_target))
        .collect();
    assert_eq!(boot.len(), 1, "{text}");
    let block = snapshot.starts_with("/dev/");
    assert_eq!(boot[0].path.as_deref(), Some(snapshot));
    assert_eq!(boot[0].kind, if block { "block" } else { "file" });
    assert_eq!(
        boot[0].format.as_deref(),
        Some(if block { "raw" } else { "qcow2" })
    );
    assert!(boot[0].stops_on_error(), "{text}");

    let added = !template
        .disks()
        .iter()
        .any(|d| d.target.as_deref() == Some(boot_target));
    assert_eq!(
        without_owned_parts(back.root(), boot_target, added),
        without_owned_parts(template.root(), boot_target, added),
        "something besides the name, UUID, MACs and boot disk changed:\n{text}"
    );
    back
}

fn template(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/libvirt/templates")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_original_sftsan_template_round_trips() {
    let text = template("seed-style.xml");
    for snapshot in ["/s/n1/base-2.qcow2", "/dev/mapper/sftsan-c-n1-snap-2"] {
        let d = check_round_trip(&text, "vda", snapshot);
        let disks = d.disks();
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[1].device, "cdrom");
        assert_eq!(
            disks[1].path.as_deref(),
            Some("/root/ubuntu-12.04.3-server-amd64.iso")
        );
        let source = d.to_xml();
        assert!(source.contains("<graphics type=\"vnc\""), "{source}");
        assert!(source.contains("<source bridge=\"br0\"/>"), "{source}");
        assert!(!source.contains("00:16:3e:11:22:33"), "{source}");
    }
}

#[test]
fn a_windows_template_round_trips() {
    let d = check_round_trip(&template("windows.xml"), "sda", "/s/n1/base-2.qcow2");
    let disks = d.disks();
    assert_eq!(disks.len(), 3);
    assert_eq!(disks[1].bus.as_deref(), Some("sata"));
    assert_eq!(
        disks[2].path.as_deref(),
        Some("/var/lib/libvirt/images/win2019-data.qcow2"),
        "the data disk is not the boot disk"
    );
    let root = d.root();
    let hyperv = root.child("features").unwrap().child("hyperv").unwrap();
    assert_eq!(hyperv.elements().count(), 7);
    assert_eq!(
        root.child("clock").unwrap().attr("offset"),
        Some("localtime")
    );
    assert_eq!(
        root.attr("xmlns:qemu"),
        Some("http://libvirt.org/schemas/domain/qemu/1.0")
    );
    let text = d.to_xml();
    assert!(
        text.contains("<description>Sysprepped golden image &amp; drivers</description>"),
        "{text}"
    );
}

#[test]
fn a_template_with_its_own_boot_disk_keeps_its_options() {
    let d = check_round_trip(&template("own-boot-disk.xml"), "sda", "/s/n1/base-2.qcow2");
    let disk = d
        .root()
        .child("devices")
        .unwrap()
        .children_named("disk")
        .next()
        .unwrap()
        .clone();
    let driver = disk.child("driver").unwrap();
    assert_eq!(driver.attr("cache"), Some("writeback"));
    assert_eq!(driver.attr("io"), Some("threads"));
    assert!(
        disk.child("backingStore").is_none(),
        "the old chain is gone"
    );
    assert_eq!(disk.child("boot").unwrap().attr("order"), Some("1"));
    assert_eq!(d.macs().len(), 2, "the NIC without a MAC gets one");
}

#[test]
fn the_example_and_default_templates_round_trip() {
    let example = include_str!("../../../examples/libvirt/domain.xml");
    let d = check_round_trip(example, "vda", "/s/n1/base-2.qcow2");
    let disks = d.disks();
    assert_eq!(disks.len(), 1, "a template without a disk gets one");
    assert_eq!(disks[0].bus.as_deref(), Some("virtio"));
    let devices: Vec<&str> = d
        .root()
        .child("devices")
        .unwrap()
        .elements()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        devices,
        ["disk", "interface", "serial", "console", "memballoon"]
    );
    let others = d.root().child("metadata").unwrap().elements().count();
    assert_eq!(others, 2, "sftsan's element beside the template's own");
    check_round_trip(&default_template().to_xml(), "vda", "/dev/mapper/x");
}

#[test]
fn rebuilding_a_built_domain_changes_nothing() {
    let once = build_domain(
        &default_template(),
        "v",
        Path::new("/s/a.qcow2"),
        meta("n1", 1),
    )
    .unwrap();
    let twice = build_domain(&once, "v", Path::new("/s/a.qcow2"), meta("n1", 1)).unwrap();
    assert_eq!(once, twice);
    assert_eq!(twice.disks().len(), 1);
}

#[test]
fn templates_sftsan_cannot_use_get_one_line() {
    for (text, want) in [
        ("<domain type='kvm'><name>x</name>", "line 1: <domain> is never closed"),
        (
            "<domain type='kvm'>\n<devices>\n</domain>",
            "line 3: ill-formed document: expected `</devices>`, but `</domain>` was found",
        ),
        ("<domain><name>x</name></domain>", "<domain> has no type attribute (qemu or kvm)"),
        ("<network><name>x</name></network>", "the root element is <network>, not <domain>"),
        (
            "<domain type='kvm'><devices/><devices/></domain>",
            "<domain> has more than one <devices>",
        ),
        (
            "<domain type='kvm'><devices><disk type='file' device='cdrom'><target dev='vda'/></disk></devices></domain>",
            "it has no boot disk and its cdrom device uses vda, the target sftsan gives the VM's disk",
        ),
        (
            "<domain type='kvm'><metadata><s:vm xmlns:s='https://sftsan.org/xmlns/domain/1' cluster='c'/></metadata></domain>",
            "sftsan metadata: no image attribute",
        ),
    ] {
        let err = parse_template(text).unwrap_err().to_string();
        assert_eq!(err, want, "{text}");
        assert!(!err.contains('\n'));
    }
}

const LIBVIRT_LIKE: &str = r#"<domain type='qemu' id='3'>
  <name>c1-n1-1</name>
  <uuid>6f1c2a8e-0b1d-4c2e-9a7f-5d3e2b1a0c9d</uuid>
  <metadata>
    <other:thing xmlns:other="http://example.org/other/1"><other:x a="1">text</other:x></other:thing>
    <sftsan:vm xmlns:sftsan="https://sftsan.org/xmlns/domain/1" cluster="c1" image="base" node="n1" snapshot="1" mode="stateless" spec="/tmp/spec.toml"/>
  </metadata>
  <memory unit='KiB'>65536</memory>
  <devices>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/mapper/sftsan-c1-n1-snap-1' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <interface type='user'>
      <mac address='02:11:22:33:44:55'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
"#;

#[test]
fn reads_libvirt_xml() {
    let d = Domain::from_xml(LIBVIRT_LIKE).unwrap();
    assert_eq!(d.kind(), "qemu");
    assert_eq!(d.name(), "c1-n1-1");
    assert_eq!(d.memory_bytes(), Some(64 << 20));
    let meta = d.sftsan().unwrap();
    assert_eq!((meta.node.as_str(), meta.snapshot), ("n1", 1));
    assert_eq!(meta.mode, VmMode::Stateless);
    let disks = d.disks();
    assert_eq!(disks[0].kind, "block");
    assert_eq!(
        disks[0].path.as_deref(),
        Some("/dev/mapper/sftsan-c1-n1-snap-1")
    );
    assert_eq!(d.macs(), [Some("02:11:22:33:44:55".to_string())]);
}

#[test]
fn metadata_is_found_by_namespace_not_prefix() {
    let text = LIBVIRT_LIKE
        .replace("<sftsan:vm xmlns:sftsan=", "<s2:vm xmlns:s2=")
        .replace("other:thing", "x:thing")
        .replace("xmlns:other", "xmlns:x");
    let d = Domain::from_xml(&text).unwrap();
    assert_eq!(d.sftsan().unwrap().cluster, "c1");
    let not_ours = LIBVIRT_LIKE.replace(SFTSAN_NS, "https://example.org/not-sftsan");
    assert!(Domain::from_xml(&not_ours).unwrap().sftsan().is_none());
    // Declared on <domain> instead of the element itself.
    let on_root = LIBVIRT_LIKE
        .replace(" xmlns:sftsan=\"https://sftsan.org/xmlns/domain/1\"", "")
        .replace(
            "<domain type='qemu'",
            "<domain xmlns:sftsan='https://sftsan.org/xmlns/domain/1' type='qemu'",
        );
    let mut d = Domain::from_xml(&on_root).unwrap();
    assert_eq!(d.sftsan().unwrap().node, "n1");
    d.set_sftsan(None);
    assert!(Domain::from_xml(&d.to_xml()).unwrap().sftsan().is_none());
    assert_eq!(d.root().child("metadata").unwrap().elements().count(), 1);
}

#[test]
fn memory_reads_and_sets() {
    let mut d = default_template();
    assert_eq!(d.memory_bytes(), Some(128 << 20));
    d.set_memory_mib(64);
    assert_eq!(
        Domain::from_xml(&d.to_xml()).unwrap().memory_bytes(),
        Some(64 << 20)
    );
}

/// The VM's disk pauses the VM on an I/O error, whether sftsan added it or took over the
/// template's (whose own policies it replaces), file or block; other disks keep theirs.
#[test]
fn the_boot_disk_stops_on_errors_and_other_disks_keep_their_policy() {
    let built = |template: &Domain, snapshot: &str| {
        let d = build_domain(template, "c-n1-1", Path::new(snapshot), meta("n1", 1)).unwrap();
        Domain::from_xml(&d.to_xml()).unwrap()
    };
    let added = built(&default_template(), "/s/n1/base-1.qcow2");
    assert!(
        added.to_xml().contains(
            r#"<driver name="qemu" type="qcow2" error_policy="stop" rerror_policy="stop"/>"#
        ),
        "{}",
        added.to_xml()
    );
    let block = built(&default_template(), "/dev/mapper/sftsan-c-n1-snap-1");
    assert!(
        block.to_xml().contains(
            r#"<driver name="qemu" type="raw" error_policy="stop" rerror_policy="stop"/>"#
        ),
        "{}",
        block.to_xml()
    );

    let template = parse_template(
        "<domain type='kvm'><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='raw' cache='none' error_policy='report' rerror_policy='ignore'/><source file='/old.raw'/><target dev='vda' bus='virtio'/></disk>\
         <disk type='file' device='disk'><driver name='qemu' type='raw' error_policy='report'/><source file='/data.raw'/><target dev='vdb' bus='virtio'/></disk>\
         <disk type='file' device='disk'><source file='/bare.raw'/><target dev='vdc' bus='virtio'/></disk>\
         </devices></domain>",
    )
    .unwrap();
    for snapshot in ["/s/n1/base-1.qcow2", "/dev/mapper/sftsan-c-n1-snap-1"] {
        let d = built(&template, snapshot);
        let disks = d.disks();
        assert_eq!(disks[0].path.as_deref(), Some(snapshot));
        assert!(disks[0].stops_on_error(), "{}", d.to_xml());
        let driver = d.root().child("devices").unwrap().child("disk").unwrap();
        assert_eq!(
            driver.child("driver").unwrap().attr("cache"),
            Some("none"),
            "the template's other driver options stay"
        );
        assert_eq!(disks[1].error_policy.as_deref(), Some("report"));
        assert_eq!(disks[1].rerror_policy, None);
        assert!(!disks[1].stops_on_error());
        assert_eq!(
            (
                disks[2].error_policy.as_deref(),
                disks[2].rerror_policy.as_deref()
            ),
            (None, None)
        );
    }
    // A template that names a disk without a driver gets one with the policies.
    let template = parse_template(
        "<domain type='kvm'><devices><disk type='file' device='disk'><source file='/old.raw'/><target dev='sda' bus='sata'/></disk></devices></domain>",
    )
    .unwrap();
    assert!(built(&template, "/s/n1/base-1.qcow2").disks()[0].stops_on_error());
    // libvirt's own XML of a disk reads back with its policies.
    let libvirt = LIBVIRT_LIKE.replace(
        "<driver name='qemu' type='raw'/>",
        "<driver name='qemu' type='raw' error_policy='stop' rerror_policy='stop'/>",
    );
    assert!(Domain::from_xml(&libvirt).unwrap().disks()[0].stops_on_error());
    assert!(!Domain::from_xml(LIBVIRT_LIKE).unwrap().disks()[0].stops_on_error());
}
