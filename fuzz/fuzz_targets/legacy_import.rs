//! The original sftsan's cfg.data and nodes file, as `sftsan import-legacy` reads them
//! (the input is cfg.data, a NUL byte, then the nodes file): never a panic, errors and
//! warnings are one line, and an imported spec writes TOML that parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftsan_core::spec::{import_legacy, ClusterSpec, LegacyMode};

fuzz_target!(|data: &[u8]| {
    let (cfg, nodes) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(cfg), Ok(nodes)) = (std::str::from_utf8(cfg), std::str::from_utf8(nodes)) else {
        return;
    };
    for mode in [LegacyMode::Remote, LegacyMode::Host] {
        match import_legacy(cfg, nodes, None, mode) {
            Err(e) => assert!(!e.to_string().contains('\n'), "one line: {e}"),
            Ok(imported) => {
                for w in &imported.warnings {
                    assert!(!w.to_string().contains('\n'), "one line: {w}");
                }
                let text = imported.spec.to_toml();
                let again =
                    ClusterSpec::from_toml(&text).expect("an imported spec's TOML parses");
                assert_eq!(again, imported.spec, "TOML round trip");
            }
        }
    }
});
