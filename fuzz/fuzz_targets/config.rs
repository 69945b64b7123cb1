//! mc-launcher.yml: template rendering, YAML parsing and validation must
//! return errors, never panic, whatever the text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mc_launcher::config::{load_text, LoadOptions};
use std::path::{Path, PathBuf};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = LoadOptions {
        config: None,
        root: Some(PathBuf::from("/nonexistent-fuzz-root")),
        project: Some("fuzz".into()),
        profiles: Vec::new(),
    };
    let _ = load_text(Path::new("fuzz.yml"), text, &opts);
});
