//! One line of an SSH public key file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let _ = mc_launcher::prepare::ssh::parse_key_line(line);
    }
    // The managed block merge sees whatever authorized_keys holds.
    let _ = mc_launcher::prepare::ssh::merge_block(text, &["ssh-ed25519 AAAA k".to_string()]);
});
