//! The core's vocabulary: process, probe and connection ids, roles, and
//! the `Input`s it is fed and the `Effect`s it asks for.

use crate::config::model::{ReadyCheck, Service, Stream};
use crate::ctl::proto::{Command, Reply};
use crate::error::Outcome;
use crate::proc::exit::Exit;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeId(pub u64);

/// A service of the core, numbered in the order it was added (never
/// reused: a service replaced by a reload gets a new id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcId(pub(super) u32);

/// A control connection, as the shell numbers them.
pub type ConnId = u64;

/// Who a service belongs to: a reload only replaces the config's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Config,
    /// `-- CMD`.
    Main,
    /// The launcher's own sshd, derived from `ssh:` (README "SSH keys").
    Sshd,
    /// A one-shot step (`steps.rs`): a prepare step run alone through
    /// the same loop, whose end ends the run, or a `salt` or `command`
    /// step of a live reconfigure (README "Live reconfigure"), whose end
    /// moves the reconfigure on.
    Step,
}

/// How live reconfigures ended, by result (the metrics'
/// `mc_reconfigure_total{result=...}`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReconfigureCounts {
    pub ok: u64,
    pub failed: u64,
    pub invalid: u64,
}

/// What the shell did for an `Effect::Reconfigure`, before any child runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// The new pillar or config is invalid (`file:line:col: ...`): nothing
    /// was touched.
    Invalid(String),
    /// Validated, but a step failed (a template that does not render).
    Failed(String),
    /// Installed and rendered: the outputs that changed (each template
    /// whose rendering differs from what was installed), and the
    /// `salt`/`command` steps the core runs next, in order (each one that
    /// succeeds counts as a change: what it wrote is not known).
    Ready {
        changed: Vec<String>,
        steps: Vec<crate::proc::Job>,
    },
}

/// A valid new configuration, from SIGHUP or `ctl reload`.
#[derive(Debug, Clone)]
pub struct ReloadSet {
    pub services: Vec<Service>,
    /// `None`: the `ssh:` section did not change, the running sshd stays
    /// as it is; `Some(x)`: sshd becomes `x`.
    pub sshd: Option<Option<Service>>,
    pub shutdown_timeout: Duration,
    pub drain: Duration,
}

/// When an input is handled, as the shell reads the clocks just before:
/// the monotonic one, that every deadline is on, and the wall clock
/// (seconds since the epoch), that cron times are on. The core keeps the
/// last one as its anchor of the wall clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    pub mono: Instant,
    pub unix: f64,
}

#[derive(Debug, Clone)]
pub enum Input {
    /// Time has passed: act on whatever is due.
    Tick,
    Exited {
        pid: i32,
        exit: Exit,
        /// Killed by the kernel's OOM killer (cgroup `memory.events`).
        oom: bool,
    },
    Spawned {
        proc: ProcId,
        pid: i32,
    },
    SpawnFailed {
        proc: ProcId,
        reason: String,
        /// What it makes of the launcher's end if it is the main
        /// service's: `NotFound`, `NotExecutable` or `Failed`.
        outcome: Outcome,
        /// Worth trying again (an input file missing): see machine.rs.
        retry: bool,
    },
    /// The shell skipped a `Spawn`: a stop request came first (a burst of
    /// thousands yields to it between spawns).
    NotSpawned {
        proc: ProcId,
    },
    ProbeDone {
        probe: ProbeId,
        ok: bool,
    },
    /// A signal the launcher received (SIGCHLD excepted: the shell reaps).
    Signal(Signal),
    Ctl {
        conn: ConnId,
        cmd: Command,
    },
    /// The outcome of an `Effect::Reload`.
    Reloaded {
        conn: Option<ConnId>,
        result: Result<ReloadSet, String>,
    },
    /// What sshd should be now that the keys changed (`None`: no sshd).
    Sshd(Option<Service>),
    /// An sd_notify message from a service (`READY=1`, `STATUS=…`).
    Notify {
        service: String,
        message: String,
    },
    /// A watched input of the live reconfigure changed (debounced).
    InputsChanged,
    /// The outcome of an `Effect::Reconfigure`.
    Prepared {
        conn: Option<ConnId>,
        result: Prepared,
    },
    /// A path `services.NAME.watch` lists changed (not debounced: the
    /// core waits for quiet).
    PathsChanged {
        service: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Spawn process `index` of `spec`; answer with `Spawned`/`SpawnFailed`.
    Spawn {
        proc: ProcId,
        spec: Arc<Service>,
        index: usize,
    },
    /// Send a signal to the process group led by `pid` (or to `pid` alone).
    Signal {
        pid: i32,
        signal: Signal,
        group: bool,
    },
    /// Run a probe for `service`; answer with `ProbeDone` within `timeout`.
    Probe {
        probe: ProbeId,
        service: String,
        check: ReadyCheck,
        timeout: Duration,
        /// The service the probe runs as (a `cmd` probe gets its user,
        /// groups, environment, working dir and rlimits).
        spec: Arc<Service>,
    },
    CancelProbe(ProbeId),
    /// Run a service's `pre_stop` hook; answer with `ProbeDone` (`probe`
    /// is the hook's id) within `timeout`.
    Hook {
        probe: ProbeId,
        spec: Arc<Service>,
        argv: Vec<String>,
        timeout: Duration,
    },
    /// An sd_notify message from the launcher to its own supervisor
    /// (`READY=1`, `STOPPING=1`).
    Notify(String),
    Reply {
        conn: ConnId,
        reply: Reply,
    },
    /// `ctl logs`: answer `conn` from the rings of captured output (the
    /// last `lines` of `service`'s, or of every one's), then, with
    /// `follow`, send it new lines as they come. No answer to the core: a
    /// read of the shell's buffers, not a decision.
    ReadLogs {
        conn: ConnId,
        service: Option<String>,
        /// The named service's stdout and stderr as the core runs it: the
        /// launcher's own sshd and the main command are in no config's
        /// `services:`.
        streams: Option<(Stream, Stream)>,
        lines: usize,
        follow: bool,
    },
    /// Read the configuration again; answer with `Reloaded`.
    Reload {
        conn: Option<ConnId>,
    },
    /// Validate and install the pillar, render the templates; answer with
    /// `Prepared`. `retry`: the last reconfigure failed, so its steps run
    /// again and count as a change even if no input differs now.
    Reconfigure {
        conn: Option<ConnId>,
        retry: bool,
    },
    /// A stop has begun (close watches; notify).
    StopBegan,
    /// A step run alone (a prepare step) ended, and how: the run ends.
    StepEnded {
        name: String,
        end: crate::proc::JobEnd,
    },
    /// Everything has ended: the launcher ends so (its exit status is
    /// `Outcome::exit_code`'s).
    Exit(Outcome),
}
