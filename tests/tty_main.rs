//! An interactive main command (README "Signals"): `docker run -ti IMAGE
//! bash` then `docker stop`. The launcher runs on a real pseudo-terminal
//! (python's `pty`), bash as its main command; the stop sends bash SIGHUP
//! first, as a closing terminal would, so it ends at once with its own
//! status instead of 137 after the grace period.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

/// Runs `argv` on a new pty, copies what it writes to stdout, sends it
/// SIGTERM once bash's prompt (`READY>`) shows and bash waits for a line
/// (asleep: a signal in between prompt and read would be bash's own race),
/// and prints its exit status.
const PTY: &str = r#"
import os, pty, select, signal, sys, time
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)

def bash_asleep():
    for d in os.listdir("/proc"):
        try:
            st = open("/proc/%s/stat" % d).read()
        except OSError:
            continue
        f = st.rsplit(")", 1)[1].split()
        if "(bash)" in st and int(f[1]) == pid:
            return f[0] == "S"
    return False

seen, sent = b"", False
while True:
    r, _, _ = select.select([fd], [], [], 0.01)
    if r:
        try:
            b = os.read(fd, 4096)
        except OSError:
            break
        if not b:
            break
        seen += b
        sys.stdout.buffer.write(b)
        sys.stdout.flush()
    if not sent and b"READY>" in seen and bash_asleep():
        os.kill(pid, signal.SIGTERM)
        sent = True
_, st = os.waitpid(pid, 0)
print("\nstatus=%d" % os.waitstatus_to_exitcode(st))
"#;

/// The launcher with `bash -i` as its main command on a pty, bash first
/// reading `rc`; `config` for the launcher when given. What the pty showed.
/// With traps in `rc`, bash reads without readline (`--noediting`), which
/// would otherwise defer them until a line is read.
fn stop_bash_on_a_tty(tag: &str, rc: &str, config: Option<&str>) -> String {
    let d = TempDir::new(tag);
    let rcfile = d.join("bashrc");
    write(&rcfile, &format!("{rc}\nPS1='READY> '\n"));
    let bin = bin().to_string_lossy().into_owned();
    let rcfile = rcfile.to_string_lossy().into_owned();
    let mut args = vec!["-c", PTY, &bin];
    let cfg;
    if let Some(body) = config {
        cfg = common::config(&d, body);
        args.extend(["-c", &cfg]);
    }
    args.extend(["--", "bash", "--noprofile", "--rcfile", &rcfile]);
    if !rc.is_empty() {
        args.push("--noediting");
    }
    args.push("-i");
    let out = Launch::new(&args)
        .program(Path::new("/usr/bin/env"))
        .root(d.path())
        .not_pid1()
        .timeout(Duration::from_secs(30))
        .run_python();
    out.assert_code(0);
    out.stdout.replace('\r', "")
}

trait Python {
    fn run_python(self) -> Output;
}

impl Python for Launch {
    /// `env python3 ARGS`: the helper from PATH.
    fn run_python(mut self) -> Output {
        self.args.insert(0, "python3".into());
        self.run()
    }
}

fn status(pty: &str) -> Option<i32> {
    pty.lines()
        .rev()
        .find_map(|l| l.strip_prefix("status="))
        .and_then(|s| s.trim().parse().ok())
}

/// Plain bash: it ends on the HUP (129, as a shell killed by HUP), and
/// nothing waits for the grace period or a SIGKILL.
#[test]
fn docker_stop_of_an_interactive_bash_ends_it_at_once() {
    let pty = stop_bash_on_a_tty("tty-bash", "", None);
    assert_eq!(status(&pty), Some(129), "{pty}");
    assert!(pty.contains("TERM received: stopping"), "{pty}");
    assert!(pty.contains("main: stopped in"), "{pty}");
    assert!(!pty.contains("SIGKILL"), "{pty}");
}

/// The shell's own status: a HUP trap that exits 7 gives 7.
#[test]
fn the_launcher_exits_with_the_shells_status() {
    let pty = stop_bash_on_a_tty("tty-trap", "trap 'echo got-HUP; exit 7' HUP", None);
    assert!(pty.contains("got-HUP"), "{pty}");
    assert_eq!(status(&pty), Some(7), "{pty}");
}

/// A shell that ignores both: HUP, then the stop signal, then SIGKILL at
/// the deadline, in that order.
#[test]
fn hup_then_the_stop_signal_then_kill() {
    let pty = stop_bash_on_a_tty(
        "tty-ignore",
        "trap 'echo got-HUP' HUP; trap 'echo got-TERM' TERM",
        Some("shutdown:\n  timeout: 1s\n"),
    );
    assert_eq!(status(&pty), Some(137), "{pty}");
    let at = |s: &str| pty.find(s).unwrap_or_else(|| panic!("no {s:?} in {pty}"));
    assert!(
        at("got-HUP") < at("got-TERM") && at("got-TERM") < at("SIGKILL"),
        "{pty}"
    );
}
