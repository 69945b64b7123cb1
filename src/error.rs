//! Exit codes (README "Exit status") and diagnostics, in one place. Layer 0.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why the launcher (or one of its commands, `ctl` included) ends: the
/// situations of README "Exit status" and "Control socket and `ctl`", one
/// per variant. `exit_code` is the only place a status number is chosen;
/// everything else holds an `Outcome` (or a status a service gave, passed
/// through). A `ctl` client ended by a stop signal is `Signaled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Stopped on request and every service stopped; a command that did its work.
    #[default]
    Done,
    /// The main or a `critical` service ended with this status (passed through).
    ServiceExit(i32),
    /// Stopped (or a process killed) by signal N: 128+N, as shells report it.
    Signaled(i32),
    /// A prepare step failed (`on_error: abort`).
    StepFailed,
    /// A critical service exhausted its retries (FAILED).
    CriticalGaveUp,
    /// The launcher could not go on (no signalfd, no probes), the main
    /// service could not be started for a reason other than its CMD, or
    /// services FAILED when every one had ended.
    Failed,
    /// Bad command line.
    Usage,
    /// Invalid config or invalid volume input, or an unwritable path (sysexits' EX_CONFIG).
    InvalidInput,
    /// CMD exists but cannot be executed.
    NotExecutable,
    /// CMD not found.
    NotFound,
    /// The launcher itself failed (a panic: a bug), after stopping everything.
    Internal,
    /// `ctl`: the launcher refused or failed the command.
    Refused,
    /// `ctl`: no launcher answered on any socket path.
    NoLauncher,
}

impl Outcome {
    /// The exit status: README "Exit status", the only place it is chosen.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Done => 0,
            Outcome::ServiceExit(code) => code,
            Outcome::Signaled(n) => 128 + n,
            Outcome::StepFailed | Outcome::CriticalGaveUp | Outcome::Failed | Outcome::Refused => 1,
            Outcome::Usage => 2,
            Outcome::InvalidInput => 78,
            Outcome::NotExecutable => 126,
            Outcome::NotFound => 127,
            Outcome::Internal => 70,
            Outcome::NoLauncher => 3,
        }
    }
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
/// logs it once and ends with its `outcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub outcome: Outcome,
    /// The step, service or input concerned (`pillar`, `salt-1`); empty
    /// when the message names it.
    pub subject: String,
    pub message: String,
    /// Already logged where it happened (with more detail than here).
    pub said: bool,
}

impl Failure {
    pub fn new(
        outcome: Outcome,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Failure {
        Failure {
            outcome,
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
        matches!(self.outcome, Outcome::Signaled(_))
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
    /// The launcher's outcome: its exit status.
    pub status: Outcome,
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
        let mut s = format!("exit {}: {}", self.status.exit_code(), self.reason);
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

    /// README "Exit status" and "mc-launcher ctl", row by row.
    #[test]
    fn exit_codes_are_the_readme_tables() {
        let rows = [
            (Outcome::Done, 0),
            (Outcome::ServiceExit(42), 42),
            (Outcome::ServiceExit(0), 0),
            (Outcome::Signaled(9), 137),
            (Outcome::Signaled(15), 143),
            (Outcome::StepFailed, 1),
            (Outcome::CriticalGaveUp, 1),
            (Outcome::Failed, 1),
            (Outcome::Usage, 2),
            (Outcome::InvalidInput, 78),
            (Outcome::NotFound, 127),
            (Outcome::NotExecutable, 126),
            (Outcome::Internal, 70),
            // `ctl`'s own (Done and Usage above).
            (Outcome::Refused, 1),
            (Outcome::NoLauncher, 3),
            // A ctl client ended by Ctrl-C, TERM (above), HUP.
            (Outcome::Signaled(2), 130),
            (Outcome::Signaled(1), 129),
        ];
        for (o, code) in rows {
            assert_eq!(o.exit_code(), code, "{o:?}");
        }
        let stop = Failure::new(Outcome::Signaled(15), "", "stopped");
        assert!(stop.is_stop());
        assert_eq!(stop.outcome.exit_code(), 143);
        assert!(!Failure::new(Outcome::StepFailed, "pillar", "x").is_stop());
    }

    #[test]
    fn termination_report_fits_and_keeps_the_newest_lines() {
        let t = Termination {
            reason: "critical service failed".into(),
            subject: Some("worker".into()),
            how: Some("killed by SIGKILL".into()),
            oom: true,
            restarts: 2,
            status: Outcome::Signaled(9),
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
