//! include/sftsan.h must be what cbindgen generates from the current source (build.rs
//! writes it to OUT_DIR): CI runs this, so a stale committed header fails the build.

use std::path::Path;

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/sftsan.h"));

#[test]
fn header_is_up_to_date() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/sftsan.h");
    if std::env::var_os("SFTSAN_UPDATE_HEADER").is_some_and(|v| v == "1") {
        std::fs::write(&committed, GENERATED).unwrap_or_else(|e| panic!("{committed:?}: {e}"));
        eprintln!("wrote {}", committed.display());
        return;
    }
    let have = std::fs::read_to_string(&committed).unwrap_or_default();
    if have != GENERATED {
        let first = have
            .lines()
            .zip(GENERATED.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| have.lines().count().min(GENERATED.lines().count()));
        panic!(
            "include/sftsan.h is stale: it differs from what cbindgen generates from \
             sftsan-ffi/src from line {} on.\nRefresh it with:\n\n    \
             SFTSAN_UPDATE_HEADER=1 cargo test -p sftsan-ffi header\n\nand commit it.",
            first + 1
        );
    }
}

/// The progress callback's documentation names every action the engine reports (it once
/// left out "revived").
#[test]
fn the_header_names_every_progress_action() {
    let doc: String = GENERATED
        .lines()
        .skip_while(|l| !l.contains("Called as `up`, `down`"))
        .take_while(|l| l.starts_with("//"))
        .collect();
    for action in sftsan_core::engine::Action::ALL {
        let quoted = format!("\"{}\"", action.as_str());
        assert!(doc.contains(&quoted), "{quoted} is missing from: {doc}");
    }
}
