//! Exit codes (README "Exit status") and diagnostics, in one place. Layer 0.

use std::fmt;
use std::path::{Path, PathBuf};

/// Stopped on request and every service stopped.
pub const EXIT_OK: i32 = 0;
/// A prepare step failed (`on_error: abort`) or a critical service exhausted its retries.
pub const EXIT_FAILURE: i32 = 1;
/// Bad command line.
pub const EXIT_USAGE: i32 = 2;
/// Invalid config or invalid volume input (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// CMD exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// CMD not found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// `mc-launcher ctl`: the command was done.
pub const CTL_OK: i32 = 0;
/// `mc-launcher ctl`: the launcher refused or failed the command.
pub const CTL_FAILED: i32 = 1;
/// `mc-launcher ctl`: no launcher answered on any socket path.
pub const CTL_NO_LAUNCHER: i32 = 3;
/// The launcher itself failed (a panic: a bug), after stopping everything.
pub const EXIT_INTERNAL: i32 = 70;

/// Status for a process killed by signal `n`, as shells report it.
pub fn signal_exit(n: i32) -> i32 {
    128 + n
}

/// A position in a file: 1-based line, 1-based column. Line 0 means "the
/// whole file", column 0 "somewhere on the line".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn new(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }
}

/// One problem found in an input file, printed as `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub file: PathBuf,
    pub pos: Pos,
    pub msg: String,
}

impl Diag {
    pub fn new(file: &Path, pos: Pos, msg: impl Into<String>) -> Diag {
        Diag {
            file: file.to_path_buf(),
            pos,
            msg: msg.into(),
        }
    }

    /// A problem with a whole file (missing, unreadable).
    pub fn file(file: &Path, msg: impl Into<String>) -> Diag {
        Diag::new(file, Pos::default(), msg)
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pos.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.msg)
        } else if self.pos.col == 0 {
            write!(f, "{}:{}: {}", self.file.display(), self.pos.line, self.msg)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.pos.line,
                self.pos.col,
                self.msg
            )
        }
    }
}

/// Print every diagnostic on stderr, sorted by file and position.
pub fn report(diags: &[Diag]) {
    let mut sorted: Vec<&Diag> = diags.iter().collect();
    sorted.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
    for d in sorted {
        eprintln!("mc-launcher: {d}");
    }
}

/// Why the launcher could not go on: the exit status and what to say.
/// Every module's errors end up as one of these at the top (`app`), which
/// logs it once and ends with its `exit_code()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    code: i32,
    /// The step, service or input concerned (`pillar`, `salt-1`); empty
    /// when the message names it.
    pub subject: String,
    pub message: String,
    /// Already logged where it happened (with more detail than here).
    pub said: bool,
}

impl Failure {
    pub fn new(code: i32, subject: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            code,
            subject: subject.into(),
            message: message.into(),
            said: false,
        }
    }

    /// A failure its module has logged already.
    pub fn said(mut self) -> Failure {
        self.said = true;
        self
    }

    /// Stopped by a signal (128+N): a warning, not an error.
    pub fn is_stop(&self) -> bool {
        self.code > 128
    }

    pub fn exit_code(&self) -> i32 {
        self.code
    }

    /// Log it once, at the top.
    pub fn log(&self) {
        if self.said {
            return;
        }
        if self.is_stop() {
            log::warn!("{self}");
        } else {
            log::error!("{self}");
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subject.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.subject, self.message)
        }
    }
}

/// The termination report (README "Termination report"): why the launcher
/// exited, written to `termination_log` (Kubernetes shows it as the
/// container's termination message) and printed as its last line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Termination {
    /// requested stop / main command ended / critical service failed /
    /// prepare step failed / invalid input / every service ended.
    pub reason: String,
    /// The service or step concerned.
    pub subject: Option<String>,
    /// Its exit code or signal, as `exit 3` or `killed by SIGKILL`.
    pub how: Option<String>,
    pub oom: bool,
    pub restarts: u32,
    pub status: i32,
    /// Its last stderr lines.
    pub tail: Vec<String>,
}

/// Where Kubernetes reads a container's termination message.
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// Kubernetes reads at most this much of the termination log.
pub const TERMINATION_MAX: usize = 4096;

impl Termination {
    /// One line: what the launcher prints last.
    pub fn summary(&self) -> String {
        let mut s = format!("exit {}: {}", self.status, self.reason);
        if let Some(subj) = &self.subject {
            s.push_str(&format!(" ({subj}"));
            if let Some(how) = &self.how {
                s.push_str(&format!(": {how}"));
            }
            if self.oom {
                s.push_str(", OOM-killed");
            }
            if self.restarts > 0 {
                s.push_str(&format!(", {} restarts", self.restarts));
            }
            s.push(')');
        }
        s
    }

    /// The report: the summary, then the last stderr lines, at most
    /// `TERMINATION_MAX` bytes (the oldest lines go first).
    pub fn render(&self) -> String {
        let head = format!("{}\n", self.summary());
        let mut lines: Vec<&str> = self.tail.iter().map(String::as_str).collect();
        loop {
            let mut out = head.clone();
            if !lines.is_empty() {
                out.push_str("last stderr lines:\n");
                for l in &lines {
                    out.push_str("  ");
                    out.push_str(l);
                    out.push('\n');
                }
            }
            if out.len() <= TERMINATION_MAX || lines.is_empty() {
                let mut end = out.len().min(TERMINATION_MAX);
                while !out.is_char_boundary(end) {
                    end -= 1;
                }
                out.truncate(end);
                return out;
            }
            lines.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_report_fits_and_keeps_the_newest_lines() {
        let t = Termination {
            reason: "critical service failed".into(),
            subject: Some("worker".into()),
            how: Some("killed by SIGKILL".into()),
            oom: true,
            restarts: 2,
            status: 137,
            tail: (0..500)
                .map(|i| format!("line {i} {}", "x".repeat(40)))
                .collect(),
        };
        assert_eq!(
            t.summary(),
            "exit 137: critical service failed (worker: killed by SIGKILL, OOM-killed, 2 restarts)"
        );
        let r = t.render();
        assert!(r.len() <= TERMINATION_MAX, "{}", r.len());
        assert!(r.starts_with(&t.summary()));
        assert!(r.contains("line 499 "), "the newest line stays");
        assert!(!r.contains("line 0 "), "the oldest goes");
        let plain = Termination {
            reason: "stopped on request (TERM)".into(),
            ..Termination::default()
        };
        assert_eq!(plain.render(), "exit 0: stopped on request (TERM)\n");
    }
}
