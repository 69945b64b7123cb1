//! Child processes: spawning in process groups, decoding how they ended,
//! reaping, capturing their output, and watching files. Tools only: the
//! policy of what to run and when is the supervisor's. Layer 2.

pub mod cgroup;
pub mod envfile;
pub mod exit;
pub mod frame;
pub mod notify;
pub mod output;
pub mod probe;
pub mod reap;
pub mod record;
pub mod spawn;
pub mod watch;

use nix::poll::PollTimeout;
use std::time::Instant;

/// The poll timeout that wakes at `deadline` (never before it: rounded up
/// to the next millisecond, so a wake-up never comes early and spins), or
/// never for `None`.
pub fn poll_timeout(deadline: Option<Instant>, now: Instant) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(at) => {
            let d = at.saturating_duration_since(now);
            let ms = d
                .as_millis()
                .saturating_add(u128::from(d.subsec_nanos() % 1_000_000 != 0));
            PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// A one-shot child run to its end: a prepare step (`salt`, `command`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// For the output prefix and the log (`salt-1`).
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Stopped (TERM, then KILL after a grace) when it runs longer.
    pub timeout: Option<std::time::Duration>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    Exited(exit::Exit),
    /// Could not be spawned, and why.
    NotStarted(String),
    TimedOut,
    /// A stop signal arrived: the job was stopped.
    Interrupted(nix::sys::signal::Signal),
}

/// What a byte of `random_bytes` is drawn as.
#[cfg(test)]
#[derive(Clone, Copy)]
pub(crate) enum Draw {
    /// This byte.
    Byte(u8),
    /// Any byte, 0-255.
    Any,
    /// A control byte, 0x00-0x1f.
    Control,
    /// A printable ASCII byte, ` ` to `~`.
    Printable,
    /// A lowercase letter.
    Lower,
}

/// `len` random bytes from `next` (a `xorshift`) for the escaping and
/// framing tests: each is one of `rare`, each of them one time in `one_in`,
/// else `common`.
#[cfg(test)]
pub(crate) fn random_bytes(
    next: &mut impl FnMut() -> u64,
    len: usize,
    rare: &[Draw],
    one_in: u64,
    common: Draw,
) -> Vec<u8> {
    (0..len)
        .map(|_| {
            let k = usize::try_from(next() % one_in).unwrap_or(usize::MAX);
            match rare.get(k).copied().unwrap_or(common) {
                Draw::Byte(b) => b,
                Draw::Any => (next() % 256) as u8,
                Draw::Control => (next() % 0x20) as u8,
                Draw::Printable => b' ' + (next() % 95) as u8,
                Draw::Lower => b'a' + (next() % 26) as u8,
            }
        })
        .collect()
}
