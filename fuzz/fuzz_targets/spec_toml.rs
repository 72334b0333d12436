//! The cluster spec (TOML), as `sftsan` reads it: parsing and every rule the spec alone
//! decides never panic, errors are one line, and a spec that parses writes TOML that
//! parses back to the same spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftsan_core::spec::{check_rules, ClusterSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let spec = match ClusterSpec::from_toml(text) {
        Ok(spec) => spec,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "one line: {e}");
            return;
        }
    };
    if let Err(e) = check_rules(&spec) {
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
    let again = ClusterSpec::from_toml(&spec.to_toml()).expect("a spec's own TOML parses");
    assert_eq!(again, spec, "TOML round trip");
});
