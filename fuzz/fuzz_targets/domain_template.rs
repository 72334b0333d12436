//! Domain templates, as `sftsan vm define --template` reads them: never a panic, a
//! template sftsan cannot use gets one line, and a VM built from a usable one writes XML
//! that reads back to the same domain, booting from the VM's snapshot.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sftsan_libvirt::vms::{build_domain, parse_template};
use sftsan_libvirt::xml::{Domain, SftsanMeta, VmMode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let template = match parse_template(text) {
        Ok(t) => t,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "one line: {e}");
            return;
        }
    };
    for snapshot in ["/s/n1/base-1.qcow2", "/dev/mapper/sftsan-c-n1-snap-1"] {
        let meta = SftsanMeta {
            cluster: "c".into(),
            image: "base".into(),
            node: "n1".into(),
            snapshot: 1,
            mode: VmMode::Stateless,
            spec: "/etc/sftsan/c.toml".into(),
        };
        let built = build_domain(&template, "c-n1-1", Path::new(snapshot), meta)
            .expect("a template that parsed builds");
        let xml = built.to_xml();
        let back = Domain::from_xml(&xml).expect("a built domain reads back");
        assert_eq!(back, built, "XML round trip");
        assert!(back.disks().iter().any(|d| d.path.as_deref() == Some(snapshot)));
        assert_eq!(back.sftsan().map(|m| m.node.as_str()), Some("n1"));
    }
});
