//! DNS messages are written by whoever answers, TLS hellos by whoever connects: any bytes must
//! parse or be refused, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = monitor::event::dns::parse(data, false);
    let _ = monitor::event::dns::parse(data, true);
    let _ = monitor::event::tls::server_name(data);
});
