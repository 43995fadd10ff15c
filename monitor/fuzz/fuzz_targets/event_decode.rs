//! Ring-buffer records come from the kernel: a record of any bytes must decode or be refused,
//! never panic; enriching what decodes must not panic either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::{
    decode::decode,
    event::{Enricher, WallClock},
    process_tree::ProcessTable,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode(data) {
        let mut enricher = Enricher::new(ProcessTable::new(100, 1024), WallClock { boot_to_unix_ns: 0 });
        let _ = enricher.enrich(event);
    }
});
