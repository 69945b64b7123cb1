//! The core's per-concern state that `Core` holds: a live reconfigure in
//! progress, a step's run, a scheduled job's runs. Their behaviour is in
//! `live.rs`, `steps.rs` and `jobs.rs`, which import the core; the core
//! imports none of them (no file-level cycle).

use super::types::{ConnId, SvcId};
use crate::proc::Job as StepJob;
use nix::sys::signal::Signal;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The live reconfigure's state (README "Live reconfigure"; its
/// behaviour is `live.rs`'s).
#[derive(Debug, Default)]
pub(super) struct Reconf {
    /// It can be asked for (`ctl reconfigure`, the watch).
    pub enabled: bool,
    /// The one in progress.
    pub run: Option<ReconfRun>,
    /// Asked again while one ran: the connections that wait for the next
    /// one, and whether one is due at all.
    pub again: Option<Vec<ConnId>>,
    /// The last one failed: the next one retries its steps.
    pub retry: bool,
    /// What `ctl status` shows of the last one.
    pub last: Option<crate::ctl::proto::ReconfigureState>,
    /// How they ended (`mc_reconfigure_total`).
    pub counts: super::types::ReconfigureCounts,
}

/// A live reconfigure in progress: its process steps.
#[derive(Debug)]
pub(super) struct ReconfRun {
    pub conns: Vec<ConnId>,
    pub changed: Vec<String>,
    pub retry: bool,
    pub steps: VecDeque<StepJob>,
    /// The step that runs (a `Step` service of the core: its timeout and
    /// end are `steps.rs`'s): its service id and name.
    pub running: Option<(SvcId, String)>,
    pub ran: Vec<String>,
}

/// How long a step's group gets between TERM and KILL (a prepare step's
/// and a live reconfigure's alike).
pub(super) const STEP_GRACE: Duration = Duration::from_secs(3);

/// What the core follows of a running step.
#[derive(Debug, Clone, Default)]
pub(super) struct StepRun {
    /// The step is the whole run (a prepare step): its end ends it and
    /// goes out as `Effect::StepEnded`. Otherwise it belongs to the live
    /// reconfigure in progress.
    pub alone: bool,
    pub timeout: Option<Duration>,
    /// Stopped when it runs past this (armed when it starts).
    pub deadline: Option<Instant>,
    pub timed_out: bool,
    /// A stop signal arrived while it ran alone.
    pub interrupted: Option<Signal>,
}

/// The run in progress.
#[derive(Debug, Clone)]
pub(super) struct Run {
    /// The services this run stopped, started again after it.
    pub paused: Vec<String>,
    /// The job's process was asked for (the paused ones are down).
    pub spawned: bool,
    pub started: Instant,
    /// Stopped when still running then (`timeout`).
    pub deadline: Option<Instant>,
    pub timed_out: bool,
}

/// What the core knows of a scheduled job.
#[derive(Debug, Clone, Default)]
pub(super) struct Job {
    /// The next run is worked out (at the first settle: it needs `now`).
    pub armed: bool,
    pub next_at: Option<Instant>,
    /// The same on the wall clock (seconds since the epoch).
    pub next_wall: Option<f64>,
    pub run: Option<Run>,
    pub last_run: Option<f64>,
    pub last_exit: Option<String>,
    pub last_result: Option<&'static str>,
    /// How its runs ended (`mc_job_runs_total{result}`, `ctl status`).
    pub counts: crate::ctl::proto::JobRuns,
}

/// A job's process: never respawned by the machine (the schedule starts it).
pub(super) fn job_policy(p: &mut super::super::machine::Policy) {
    p.respawn = false;
    p.max_retry = Some(0);
    p.min_uptime = Duration::ZERO;
}
