//! The main command keeps the caller's signal setup, as with tini (its
//! test/sigconf): signals ignored by whoever started the launcher stay
//! ignored in the main command, signals blocked stay blocked, including
//! the ones the launcher itself ignores (SIGTTOU, SIGTTIN) or blocks to
//! read them (SIGINT, SIGTERM). Services start with every signal at its
//! default and an empty mask. Real binary as PID 1.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

/// tini's sigconf-test, in Python: ignore a few signals, block a few,
/// exec the launcher with the arguments given.
const WRAPPER: &str = r#"#!/usr/bin/python3
import os, signal, sys
for s in (signal.SIGTTOU, signal.SIGSEGV, signal.SIGINT, signal.SIGPIPE, signal.SIGUSR1):
    signal.signal(s, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTIN, signal.SIGILL, signal.SIGTERM, signal.SIGUSR2})
launcher = os.environ["MC_TEST_LAUNCHER"]
os.execv(launcher, [launcher] + sys.argv[1:])
"#;

fn mask(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

fn has(set: u64, sig: i32) -> bool {
    set & (1u64 << (sig - 1)) != 0
}

/// glibc's own signals (32, 33), which a harness started through glibc's
/// posix_spawn leaves ignored.
const GLIBC: u64 = 0b11 << 31;

#[test]
fn the_main_command_keeps_the_callers_ignored_and_blocked_signals() {
    let d = TempDir::new("sigconf");
    let wrapper = d.join("sigconf-wrapper");
    write(&wrapper, WRAPPER);
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let svc_dump = d.join("service-status");
    // A service with rlimits is forked, not posix_spawned: both ways.
    let forked_dump = d.join("forked-status");
    let cfg = d.join("mc-launcher.yml");
    write(
        &cfg,
        &format!(
            "services:\n  svc:\n    cmd: [/bin/sh, -c, \"cat /proc/self/status > {0}.tmp && mv {0}.tmp {0} && exec sleep 1000\"]\n  forked:\n    cmd: [/bin/sh, -c, \"cat /proc/self/status > {1}.tmp && mv {1}.tmp {1} && exec sleep 1000\"]\n    rlimits: {{nofile: 1000}}\n",
            svc_dump.display(),
            forked_dump.display()
        ),
    );
    // The main command waits for the service's dump, then shows its own
    // state from the same process (exec keeps the mask and dispositions).
    // Python, not sh: dash clears the signal mask when it starts.
    let main = format!(
        "import os, time\nwhile not (os.path.exists({:?}) and os.path.exists({:?})): time.sleep(0.01)\nos.execv('/bin/cat', ['cat', '/proc/self/status'])",
        svc_dump.display().to_string(),
        forked_dump.display().to_string()
    );
    let o = Launch::new(&[
        "-c",
        &cfg.to_string_lossy(),
        "--",
        "/usr/bin/python3",
        "-c",
        &main,
    ])
    .program(&wrapper)
    .env("MC_TEST_LAUNCHER", &bin().to_string_lossy())
    .run();
    o.assert_code(0);
    let (ign, blk) = (mask(&o.stdout, "SigIgn:"), mask(&o.stdout, "SigBlk:"));
    for (sig, name) in [
        (nix_sig::TTOU, "SIGTTOU"),
        (nix_sig::SEGV, "SIGSEGV"),
        (nix_sig::INT, "SIGINT"),
        (nix_sig::PIPE, "SIGPIPE"),
        (nix_sig::USR1, "SIGUSR1"),
    ] {
        assert!(has(ign, sig), "{name} ignored in the main command: {ign:x}");
    }
    for (sig, name) in [
        (nix_sig::TTIN, "SIGTTIN"),
        (nix_sig::ILL, "SIGILL"),
        (nix_sig::TERM, "SIGTERM"),
        (nix_sig::USR2, "SIGUSR2"),
    ] {
        assert!(has(blk, sig), "{name} blocked in the main command: {blk:x}");
    }
    // Nothing more than the caller's: SIGTTIN is not ignored (the launcher
    // ignores it for itself), SIGINT not blocked (the launcher blocks it).
    assert!(
        !has(ign, nix_sig::TTIN) && !has(blk, nix_sig::INT),
        "{ign:x} {blk:x}"
    );

    for dump in [&svc_dump, &forked_dump] {
        let svc = std::fs::read_to_string(dump).expect("service dump");
        assert_eq!(mask(&svc, "SigBlk:"), 0, "a service's mask is empty: {svc}");
        assert_eq!(
            mask(&svc, "SigIgn:") & !GLIBC,
            0,
            "a service ignores nothing: {svc}"
        );
    }
}

/// Without a caller setup to keep, the main command starts clean too.
#[test]
fn a_plain_caller_gives_a_clean_main_command() {
    let o = Launch::new(&["--", "cat", "/proc/self/status"]).run();
    o.assert_code(0);
    assert_eq!(mask(&o.stdout, "SigBlk:"), 0, "{}", o.stdout);
    assert_eq!(mask(&o.stdout, "SigIgn:") & !GLIBC, 0, "{}", o.stdout);
}

/// Signal numbers (Linux, x86-64 and arm64 alike).
mod nix_sig {
    pub const INT: i32 = 2;
    pub const ILL: i32 = 4;
    pub const USR1: i32 = 10;
    pub const SEGV: i32 = 11;
    pub const USR2: i32 = 12;
    pub const PIPE: i32 = 13;
    pub const TERM: i32 = 15;
    pub const TTIN: i32 = 21;
    pub const TTOU: i32 = 22;
}
