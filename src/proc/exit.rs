//! How a child ended: the one place that decodes `waitpid` statuses.
//! Layer 2.

use crate::error::Outcome;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

/// How a process ended, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// This end passed through as the launcher's (the main or a critical
    /// service's): its code, or killed by signal N.
    pub fn outcome(self) -> Outcome {
        match self {
            Exit::Code(c) => Outcome::ServiceExit(c),
            Exit::Signal(n) => Outcome::Signaled(n),
        }
    }

    /// The shell convention: the code, or 128+N for signal N.
    pub fn status(self) -> i32 {
        self.outcome().exit_code()
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit {c}"),
            Exit::Signal(n) => match Signal::try_from(*n) {
                Ok(s) => write!(f, "killed by {}", crate::signals::short_name(s)),
                Err(_) => write!(f, "killed by signal {n}"),
            },
        }
    }
}

/// The pid and how it ended, for a status that means "this child is gone";
/// `None` for the others (stopped, continued, still alive).
pub fn decode(status: WaitStatus) -> Option<(i32, Exit)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), Exit::Code(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), Exit::Signal(sig as i32))),
        _ => None,
    }
}
