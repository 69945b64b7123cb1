//! One line a client sends on the control socket.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mc_launcher::ctl::proto::parse_request(data);
});
