//! The pillar override validator (minijinja where possible, then YAML).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = mc_launcher::prepare::pillar::validate(std::path::Path::new("pillar.sls"), text);
});
