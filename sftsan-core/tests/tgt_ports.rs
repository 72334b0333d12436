//! Two clusters' tgtd control ports can meet (they are derived from cluster and node): the
//! second target must refuse, naming the port, and leave the first one's tgtd, target and
//! control files alone. Before, it removed the first one's control socket on its way out.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use sftsan_core::backends::tgt::TgtTarget;
use sftsan_core::error::ErrorKind;
use sftsan_core::resources::{Ctx, Observed, Resource, Tools};
use sftsan_core::transport::LocalTransport;

const CONTROL_PORT: u16 = 31_777;

fn target(dir: &Path, node: &str, port: u16, image: &Path) -> TgtTarget {
    TgtTarget {
        node: node.into(),
        run_dir: dir.join(node),
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        control_port: CONTROL_PORT,
        iqn: format!("iqn.2014-12.org.sftsan:test.{node}"),
        source: image.to_path_buf(),
        initiators: vec![],
        chap: None,
        source_dm: None,
    }
}

#[test]
#[ignore = "root tier: needs root and tgtd (scripts/test.sh runs it)"]
fn a_second_tgtd_on_a_taken_control_port_is_refused_and_the_first_is_left_alone() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "tgtd needs root");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let ctx = Ctx {
        transport: Arc::new(LocalTransport),
        tools: Arc::new(Tools::from_env()),
    };
    let first = target(dir.path(), "a", 33_261, &image);
    let second = target(dir.path(), "b", 33_262, &image);
    let socket = Path::new("/var/run/tgtd").join(format!("socket.{CONTROL_PORT}"));

    first.create(&ctx).unwrap();
    let teardown = scopeguard(&first, &ctx);
    assert!(matches!(first.observe(&ctx).unwrap(), Observed::Present(_)));

    let err = second.create(&ctx).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InUse, "{err}");
    assert!(
        err.to_string()
            .contains(&format!("tgt control port {CONTROL_PORT}")),
        "{err}"
    );
    second.teardown(&ctx).unwrap();

    assert!(socket.exists(), "the first tgtd's control socket is gone");
    match first.observe(&ctx).unwrap() {
        Observed::Present(params) => assert!(
            params
                .iter()
                .any(|(k, v)| *k == "target" && v == &first.iqn),
            "{params:?}"
        ),
        other => panic!("the first target is {other:?}"),
    }
    drop(teardown);
    assert!(
        !socket.exists(),
        "the first tgtd's own teardown removes its files"
    );
}

/// Tears the target down when dropped, also when the test fails.
fn scopeguard<'a>(t: &'a TgtTarget, ctx: &'a Ctx) -> impl Drop + 'a {
    struct Down<'a>(&'a TgtTarget, &'a Ctx);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = self.0.teardown(self.1);
        }
    }
    Down(t, ctx)
}
