//! The launcher's sshd and its keys, with the real binary as PID 1 (the
//! defects operators hit in the field trial): a reload or SIGHUP keeps
//! sshd, the first key starts it and removing the last one stops it, the
//! key watch goes idle after a change and reports once per change.

mod common;
use common::tree::{keypair, ssh_login, Tree};
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A makina tree (tests/common/tree.rs) whose volume has a key directory.
fn tree(tag: &str, config: &str) -> Tree {
    let t = Tree::new(tag, config);
    std::fs::create_dir_all(t.volume().join("ssh")).expect("key dir");
    t
}

/// The shell command that logs in with `key` and says so.
fn ssh_cmd(port: u16, key: &Path) -> String {
    format!("{} echo logged-in", ssh_login(port, key))
}

/// Shell: retry `cmd` until it prints `want`, at most `tries` × 0.1 s.
fn until(cmd: &str, want: &str, tries: u32) -> String {
    format!("i=0; until {cmd} 2>/dev/null | grep -q {want} || [ $i -ge {tries} ]; do sleep 0.1; i=$((i+1)); done")
}

#[test]
fn reload_and_sighup_keep_sshd() {
    let t = tree("ft-reload", "ssh:\n  sshd: auto\n");
    let (key, public) = keypair(&t.d.join("keys"), "op");
    write(&t.volume().join("ssh/op.pub"), &format!("{public}\n"));
    let port = free_port();
    let login = ssh_cmd(port, &key);
    let bin = bin();
    let script = format!(
        r#"{wait}
echo before=$({login} 2>/dev/null)
pid=$(pgrep -f 'sshd -D -e' | head -1)
{bin} ctl reload
kill -HUP 1
{bin} ctl reload
echo after=$({login} 2>/dev/null)
[ "$(pgrep -f 'sshd -D -e' | head -1)" = "$pid" ] && echo same-sshd"#,
        wait = until(&login, "logged-in", 100),
        bin = bin.display(),
    );
    let out = t.launch_with_sshd(port, &script).run();
    out.assert_code(0);
    out.assert_stdout("before=logged-in");
    // an unchanged reload changes nothing, sshd included
    out.assert_stdout("reloaded: none added, none removed, none changed");
    // ssh still works after reload and SIGHUP
    out.assert_stdout("after=logged-in");
    out.assert_stdout("same-sshd");
    out.assert_no_stderr("sshd removed");
    // Started at launch, it says so as a live start does; once.
    out.assert_stderr_count(
        "mc-launcher: sshd: starting (a valid key is installed)\n",
        1,
    );
}

/// `ssh.sshd: always` starts sshd at launch with no key, and says so.
#[test]
fn sshd_always_says_it_starts() {
    let t = tree("ft-always", "ssh:\n  sshd: always\n");
    let out = t.launch_with_sshd(free_port(), "true").run();
    out.assert_code(0);
    out.assert_stderr_count("mc-launcher: sshd: starting (ssh.sshd: always)\n", 1);
}

#[test]
fn first_key_starts_sshd_and_the_last_one_stops_it() {
    let t = tree("ft-firstkey", "ssh:\n  sshd: auto\n");
    let (key, _) = keypair(&t.d.join("keys"), "late");
    let port = free_port();
    let login = ssh_cmd(port, &key);
    let script = format!(
        r#"echo before=$({login} >/dev/null 2>&1; echo rc=$?)
cp {pubfile} {vol}/ssh/late.pub
{wait}
echo with-key=$({login} 2>/dev/null)
rm {vol}/ssh/late.pub
i=0; while pgrep -f 'sshd -D -e' >/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo without=$({login} >/dev/null 2>&1; echo rc=$?)"#,
        pubfile = key.with_extension("pub").display(),
        vol = t.volume().display(),
        wait = until(&login, "logged-in", 100),
    );
    let out = t.launch_with_sshd(port, &script).run();
    out.assert_code(0);
    // no sshd without keys
    out.assert_stdout("before=rc=255");
    // the first key starts sshd
    out.assert_stdout("with-key=logged-in");
    out.assert_stderr("sshd: starting");
    // the last key gone, sshd stops
    out.assert_stdout("without=rc=255");
    out.assert_stderr("sshd: stopping (no key left)");
}

#[test]
fn key_watch_goes_idle_after_a_change_and_reports_once_per_change() {
    let t = tree("ft-idle", "ssh:\n  sshd: never\n  watch: true\n");
    write(
        &t.volume().join("ssh/id_ed25519"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nxxxx\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    let run = t.launch(&["--", "sleep", "1000"]).spawn();
    let pid = run.wait_signals_blocked();
    // The prepare phase's own report first (the main command runs after
    // it): a change made before would be part of that first scan.
    wait_state(&run, "main", "running", Duration::from_secs(10));
    let keys_file = PathBuf::from(format!("/proc/{pid}/root/root/.ssh/authorized_keys"));
    let has = |name: &str| {
        std::fs::read_to_string(&keys_file).is_ok_and(|t| t.contains(&format!(" {name}\n")))
    };
    let keys = t.d.join("keys");
    for (n, name) in ["one", "two"].iter().enumerate() {
        let (_, public) = keypair(&keys, name);
        // A touch, then the new key: one change, applied once.
        std::fs::write(t.volume().join("ssh/x"), "").expect("touch");
        write(
            &t.volume().join(format!("ssh/{name}.pub")),
            &format!("{public}\n"),
        );
        assert!(
            wait_until(Duration::from_secs(10), || has(name)),
            "key {n} never installed"
        );
        // Applied: from now on the launcher sleeps (its own reads of the
        // key dir wake nothing).
        std::thread::sleep(Duration::from_millis(500));
        let before = voluntary_switches(pid);
        std::thread::sleep(Duration::from_secs(2));
        let after = voluntary_switches(pid);
        assert_eq!(
            after,
            before,
            "woke up {} times after change {n}",
            after - before
        );
    }
    let out = run.stop();
    let refusals = out.stderr.matches("PRIVATE key").count();
    assert_eq!(
        refusals,
        3,
        "the private key is reported at start and once per change\n{}",
        out.all()
    );
}
