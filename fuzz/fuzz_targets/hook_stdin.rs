//! The domain XML libvirt writes to the hook's stdin: reading it never panics, and a
//! refusal is one line (libvirt shows it as the start's error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftsan_libvirt::hook::parse_request;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse_request(xml) {
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
});
