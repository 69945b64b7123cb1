//! Env files (`env_file`): the dotenv parser must return variables or an
//! error naming a line, never panic, in time linear in the text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = mc_launcher::proc::envfile::parse(text) {
        assert!(e.line >= 1 && e.line <= text.split('\n').count());
    }
});
