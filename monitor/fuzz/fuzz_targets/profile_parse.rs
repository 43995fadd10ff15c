//! A profile is user input: any text must give a profile or a located error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(profile) = monitor::profile::Profile::parse(text, "fuzz.yml") {
            // What parses must survive a round trip through YAML.
            let again = monitor::profile::Profile::parse(&profile.to_yaml(), "again.yml");
            assert!(again.is_ok(), "a parsed profile did not parse again: {again:?}");
        }
    }
});
