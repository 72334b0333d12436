//! The journal in a cluster's state directory, as `up` and `down` read it after a crash:
//! a damaged one is an error, never a panic, and one that reads writes text that reads
//! back to the same journal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftsan_core::engine::JournalData;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(journal) = JournalData::parse(text) {
        let again = JournalData::parse(&journal.to_text()).expect("a journal's own text reads");
        assert_eq!(again, journal, "journal round trip");
    }
});
