//! A circus INI file (read from disk, as the launcher reads them).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("mcl-fuzz-circus-{}.ini", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let cfg = mc_launcher::config::CircusCfg {
        config: Some(path.clone()),
        include: Vec::new(),
    };
    let env: BTreeMap<String, String> = [("HOME".to_string(), "/root".to_string())].into();
    let _ = mc_launcher::config::circus::load(&cfg, &env);
    // Nothing of a fuzz run stays in the host's temp dir.
    let _ = std::fs::remove_file(&path);
});
