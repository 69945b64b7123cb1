//! The prepare phase (README "The prepare phase"): each step computes what to do from the
//! volume and the config, and writes through `fsutil`.
//!
//! `step` is the one list of steps and every facet of one (plan, run,
//! check); `phase` runs them in order, after the preflight (`preflight`:
//! what they would write, tested beforehand); `pillar`, `ssh`,
//! `reconfigure` and `prepopulate` are the steps themselves.

pub mod phase;
pub mod pillar;
pub mod preflight;
pub mod prepopulate;
pub mod reconfigure;
pub mod ssh;
pub mod step;

use crate::config::model::{Config, Service};
use crate::ctl::proto::PillarState;
use crate::proc::{Job, JobEnd};
use nix::sys::signal::Signal;

/// How the phase runs its child processes (the `salt` and `command` steps)
/// and hears of stop signals: through the launcher's one loop, which `app`
/// wires in.
pub trait Jobs {
    /// Run a step's child to its end.
    fn run(&mut self, cfg: &Config, job: Job) -> JobEnd;
    /// A stop signal that arrived since the last look, if any (children
    /// that ended meanwhile are reaped).
    fn stop_requested(&mut self) -> Option<Signal>;
}

/// What the phase leaves for the supervisor: the services it adds (sshd)
/// and, when the start went on with the last valid override, that fact
/// (`ctl status` and `/status` show it).
#[derive(Debug, Default)]
pub struct Prepared {
    pub services: Vec<Service>,
    pub pillar: Option<PillarState>,
}

/// What a write into the state dir that failed asks of the operator (a
/// `--read-only` container with no tmpfs: README "Read-only and non-root
/// containers"): the one wording of the digest's and the last-good copy's
/// warnings.
pub(crate) fn state_dir_hint(state: &std::path::Path) -> String {
    format!(
        "the state dir {s} must be writable to keep it (add to docker run: --tmpfs /run, where the state dir falls back to /run/mc-launcher; or mount a volume on {s})",
        s = state.display()
    )
}
