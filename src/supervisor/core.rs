//! The supervisor's policy, pure: `Core::handle(Input, now) -> Vec<Effect>`.
//!
//! The core owns every decision — what starts when, who stops when, what
//! the exit status is, what a reload changes — and performs no I/O: the
//! shell (`shell.rs`) carries the effects out and feeds what happened back
//! as the next inputs, never from inside `handle`. Time comes in as `now`
//! (`Now`: the monotonic clock and the wall clock's reading); the core
//! says when it next needs to be woken (`next_deadline`) and the shell
//! then sends `Input::Tick`. Processes have stable ids (`ProcId`), never
//! reused, so a late event about an old process cannot touch a new one.

use super::machine::{Ctx, Event, Policy, Proc};
use crate::config::model::Service;
use crate::error::Outcome;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many processes are spawned per round, so that a stop
/// signal arriving during a start of thousands is read between batches.
const SPAWN_BATCH: usize = 64;

mod control;
mod exits;
mod jobs;
mod live;
pub(super) mod metrics;
mod probes;
mod reload;
mod start;
mod state;
mod steps;
mod stop;
mod types;
use self::state::*;
pub use self::types::*;

#[derive(Debug, Clone, PartialEq)]
enum Status {
    /// Waiting for its dependencies or its turn.
    Pending,
    /// `autostart: false`, or stopped with `ctl stop`: only started on request.
    Manual,
    Started,
    Failed(String),
    /// Removed or replaced: stopping, then forgotten.
    Retired,
}

#[derive(Debug, Clone)]
struct Slot {
    pub id: ProcId,
    pub m: Proc,
}

/// The readiness check of a started service.
#[derive(Debug, Clone)]
struct Readiness {
    pub ok: bool,
    /// Ready once since it started: from then on a failing probe makes it
    /// not ready (no restart); before, the deadline makes it FAILED.
    pub ever: bool,
    /// Not ready by then: FAILED.
    pub deadline: Instant,
    pub next_at: Option<Instant>,
    pub running: Option<ProbeId>,
    /// Failed probes in a row.
    pub failures: u32,
}

/// The liveness check of a running service.
#[derive(Debug, Clone, Default)]
struct Liveness {
    pub next_at: Option<Instant>,
    pub running: Option<ProbeId>,
    /// Failed probes in a row.
    pub failures: u32,
}

/// What the core knows of a service beyond its processes: for `ctl
/// status`, the summary, the termination report and the metrics.
#[derive(Debug, Clone, Default)]
struct Facts {
    /// Why it was last restarted by the launcher (`liveness`).
    pub restart_reason: Option<String>,
    /// Processes the kernel killed for lack of memory.
    pub oom_kills: u32,
    /// Its last end was an OOM kill.
    pub last_oom: bool,
    /// `STATUS=` from sd_notify.
    pub status_text: Option<String>,
    pub ready_probe_failures: u64,
    pub live_probe_failures: u64,
}

#[derive(Debug, Clone)]
struct Svc {
    pub spec: Arc<Service>,
    pub role: Role,
    pub policy: Policy,
    pub procs: Vec<Slot>,
    /// How many processes run now: `numprocesses`, moved by incr/decr.
    pub scale: usize,
    pub status: Status,
    pub readiness: Option<Readiness>,
    pub liveness: Option<Liveness>,
    pub facts: Facts,
    /// The stop signal went out during the shutdown.
    pub stop_sent: bool,
    /// A scheduled job's runs (README "Scheduled jobs").
    pub job: Option<Job>,
    /// A watched file changed: act then (`watch.debounce`).
    pub watch_due: Option<Instant>,
    /// A step's timeout and end (`Role::Step`).
    pub step: Option<StepRun>,
}

impl Svc {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// A process of it is alive (starting, running or stopping): not to be
    /// confused with its liveness probe (`liveness`).
    pub fn has_live_process(&self) -> bool {
        self.procs.iter().any(|p| p.m.is_live())
    }

    pub fn ready_ok(&self) -> bool {
        self.readiness.as_ref().is_none_or(|r| r.ok)
    }

    /// Running, ready, with every process it should have.
    pub fn is_up(&self) -> bool {
        self.status == Status::Started
            && self.ready_ok()
            && self.procs.iter().take(self.scale).all(|p| p.m.is_running())
    }

    /// The processes that count: those within `scale`, and any extra one
    /// still alive after a `decr`.
    pub fn active(&self) -> impl Iterator<Item = &Slot> {
        let n = self.scale;
        self.procs
            .iter()
            .enumerate()
            .filter(move |(i, p)| *i < n || p.m.is_live())
            .map(|(_, p)| p)
    }

    fn probe_running(&self) -> bool {
        self.readiness.as_ref().is_some_and(|r| r.running.is_some())
            || self.liveness.as_ref().is_some_and(|l| l.running.is_some())
    }
}

/// The launcher's own readiness (README "Readiness notification"):
/// `READY=1` to the supervisor that runs it, once, when everything is up.
struct OwnReadiness {
    /// It runs under a supervisor that takes sd_notify messages.
    notify: bool,
    /// `READY=1` went out to it.
    told_ready: bool,
}

/// The stop concern (README "Stopping", "Drain").
struct Stop {
    /// `shutdown.timeout`.
    timeout: Duration,
    /// `shutdown.drain`.
    drain: Duration,
    /// The stop in progress.
    active: Option<Stopping>,
}

/// A stop in progress.
struct Stopping {
    /// Why: for the termination report.
    cause: Cause,
    deadline: Instant,
    killed: bool,
    /// Draining (README "Drain"): the pre_stop hooks still running, then
    /// the wait; nothing is stopped until both are over.
    hooks: std::collections::HashSet<ProbeId>,
    drain_for: Duration,
    drain_until: Option<Instant>,
    drained: bool,
}

/// Why the launcher is stopping, for the termination report.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    /// A stop signal or `ctl quit` (the signal's name, or `ctl quit`).
    Requested(String),
    /// The main command ended.
    MainEnded,
    CriticalEnded(String),
    CriticalFailed(String, String),
    /// Nothing was left to supervise.
    AllEnded {
        failed: Vec<String>,
    },
}

/// The shell sees only `handle` (an input, and the clocks as `Now`),
/// `next_deadline` and the queries (`status_reply`, `health`,
/// `metrics_text`, `summary`, `termination`, `is_stopping`); every field
/// is the core's own.
pub struct Core {
    /// When the launcher started (seconds since the epoch), for
    /// `mc_launcher_start_time_seconds`: the shell reads the clock, not
    /// the core.
    start_time_unix: f64,
    svcs: BTreeMap<SvcId, Svc>,
    next_svc: SvcId,
    next_proc: u64,
    next_probe: u64,
    pids: HashMap<i32, ProcId>,
    where_is: HashMap<ProcId, (SvcId, usize)>,
    /// How a stop goes, and the one in progress (`stop.rs`).
    stop: Stop,
    can_reload: bool,
    /// Set by the first cause of a stop that decides the exit status.
    decided: Option<Outcome>,
    /// How the main service ended (or could not start): the exit status
    /// when no cause decided it.
    main_exit: Option<Outcome>,
    warmup_until: Option<Instant>,
    rng: u64,
    exited: bool,
    /// The launcher's own readiness, told to its supervisor (`probes.rs`).
    own: OwnReadiness,
    /// The live reconfigure (`live.rs`).
    reconf: Reconf,
    /// The wall clock at an instant (seconds since the epoch), from the
    /// last input's `Now`: cron times.
    wall: Option<(Instant, f64)>,
    /// The main command runs in the foreground of a terminal (stdin is a
    /// tty): a stop sends it SIGHUP first, as a closing terminal would.
    main_on_tty: bool,
    /// The pillar in use when it is the last valid override (`ctl status`).
    pillar: Option<crate::ctl::proto::PillarState>,
}

pub struct CoreOptions {
    pub shutdown_timeout: Duration,
    /// SIGHUP and `ctl reload` read the config again (there is a file).
    pub can_reload: bool,
    /// Seed of the backoff jitter.
    pub seed: u64,
    /// `shutdown.drain`.
    pub drain: Duration,
    /// Send `READY=1` / `STOPPING=1` to our own supervisor (NOTIFY_SOCKET).
    pub notify_self: bool,
    /// `ctl reconfigure` and the watch may ask for a live reconfigure.
    pub can_reconfigure: bool,
    /// When the launcher started (seconds since the epoch).
    pub start_time_unix: f64,
    /// The main command runs in the foreground of a terminal.
    pub main_on_tty: bool,
    /// The start went on with the last valid pillar override.
    pub pillar: Option<crate::ctl::proto::PillarState>,
}

/// Nothing asked for: no stop deadline, no reload, no reconfigure, no
/// drain, no sd_notify of our own, jitter seed 1. A prepare step's core
/// and the tests start from it.
impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions {
            shutdown_timeout: Duration::ZERO,
            can_reload: false,
            seed: 1,
            drain: Duration::ZERO,
            notify_self: false,
            can_reconfigure: false,
            start_time_unix: 0.0,
            main_on_tty: false,
            pillar: None,
        }
    }
}

impl Core {
    pub fn new(services: Vec<(Service, Role)>, opts: CoreOptions) -> Core {
        let mut core = Core {
            start_time_unix: opts.start_time_unix,
            svcs: BTreeMap::new(),
            next_svc: SvcId(0),
            next_proc: 0,
            next_probe: 0,
            pids: HashMap::new(),
            where_is: HashMap::new(),
            stop: Stop {
                timeout: opts.shutdown_timeout,
                drain: opts.drain,
                active: None,
            },
            can_reload: opts.can_reload,
            decided: None,
            main_exit: None,
            warmup_until: None,
            rng: opts.seed | 1,
            exited: false,
            own: OwnReadiness {
                notify: opts.notify_self,
                told_ready: false,
            },
            reconf: Reconf {
                enabled: opts.can_reconfigure,
                ..Reconf::default()
            },
            wall: None,
            main_on_tty: opts.main_on_tty,
            pillar: opts.pillar,
        };
        for (spec, role) in services {
            core.add(spec, role);
        }
        core
    }

    /// A core that runs one prepare step alone (README "The prepare
    /// phase"): its end goes out as `Effect::StepEnded`, then `Exit`.
    pub fn for_step(job: &crate::proc::Job) -> Core {
        let mut core = Core::new(
            Vec::new(),
            CoreOptions {
                shutdown_timeout: STEP_GRACE,
                ..CoreOptions::default()
            },
        );
        core.add_step(job, true);
        core
    }

    /// Handle one input; the effects are the shell's to carry out, in order.
    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Effect> {
        self.wall = Some((now.mono, now.unix));
        let now = now.mono;
        let mut fx = Vec::new();
        match input {
            Input::Tick => self.tick(now, &mut fx),
            Input::Exited { pid, exit, oom } => {
                if let Some(id) = self.pids.remove(&pid) {
                    self.step_exited(id, pid, &mut fx);
                    self.note_exit(id, exit, oom, now, &mut fx);
                    let was_running = self.slot_of(id).is_some_and(|m| m.is_running());
                    self.proc_event(id, Event::Exited(exit), now, &mut fx);
                    self.note_crash(id, was_running);
                }
            }
            Input::Spawned { proc, pid } => {
                self.pids.insert(pid, proc);
                if let Some(name) = self.label_of(proc) {
                    log::debug!("{name}: started, pid {pid}");
                }
                self.proc_event(proc, Event::Spawned { pid }, now, &mut fx);
                self.arm_liveness(proc, now);
            }
            Input::SpawnFailed {
                proc,
                reason,
                outcome,
                retry,
            } => {
                if !retry && self.svc_of(proc).is_some_and(|s| s.spec.main) {
                    self.main_exit = Some(outcome);
                }
                let ev = Event::SpawnFailed { reason, retry };
                self.proc_event(proc, ev, now, &mut fx);
            }
            Input::NotSpawned { proc } => self.proc_event(proc, Event::NotSpawned, now, &mut fx),
            Input::ProbeDone { probe, ok } => self.probe_done(probe, ok, now, &mut fx),
            Input::Signal(sig) => self.on_signal(sig, now, &mut fx),
            Input::Ctl { conn, cmd } => {
                // What an operator did by hand shows in the log (`docker
                // logs`), as a SIGHUP's reload does; a job's run started
                // so says `run started` itself.
                use crate::ctl::proto::Command as C;
                let acts = match &cmd {
                    C::Start { name } | C::Restart { name } => self
                        .find(name)
                        .and_then(|s| self.svcs.get(&s))
                        .is_none_or(|s| s.job.is_none()),
                    C::Stop { .. } | C::Signal { .. } | C::Incr { .. } | C::Decr { .. } => true,
                    _ => false,
                };
                if let Some(reply) = self.command(conn, cmd, now, &mut fx) {
                    if let Some(m) = reply.message.as_deref().filter(|_| acts && reply.ok) {
                        log::info!("ctl: {m}");
                    }
                    fx.push(Effect::Reply { conn, reply });
                }
            }
            Input::Reloaded { conn, result } => {
                let reply = self.reloaded(result, now, &mut fx);
                match conn {
                    Some(conn) => {
                        if let Some(m) = reply.message.as_deref().filter(|_| reply.ok) {
                            log::info!("ctl reload: {m}");
                        }
                        fx.push(Effect::Reply { conn, reply });
                    }
                    // A refused reload was said by `reloaded`, in one record.
                    None => {
                        if let Some(m) = reply.message.filter(|_| reply.error.is_none()) {
                            log::info!("SIGHUP: {m}");
                        }
                    }
                }
            }
            Input::Notify { service, message } => self.notified(&service, &message, now),
            Input::Sshd(want) => {
                self.set_sshd(want, now);
                self.stop_retired(now, &mut fx);
            }
            Input::InputsChanged => self.request_reconfigure(None, &mut fx),
            Input::Prepared { conn, result } => self.prepared(conn, result, now, &mut fx),
            Input::PathsChanged { service } => self.paths_changed(&service, now),
        }
        self.settle(now, &mut fx);
        fx
    }

    /// When the core next needs a `Tick` (`None`: only events wake it).
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        for s in self.svcs.values() {
            for p in &s.procs {
                consider(p.m.deadline());
            }
        }
        if self.stop.active.is_none() {
            consider(self.warmup_until);
            consider(self.probe_deadlines());
            consider(self.job_deadlines());
            consider(self.step_deadlines());
        }
        consider(self.kill_deadline());
        consider(self.drain_deadline());
        at
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.active.is_some()
    }

    /// How the launcher ends (its exit status), once everything has ended.
    fn outcome(&self) -> Outcome {
        self.decided.or(self.main_exit).unwrap_or(Outcome::Done)
    }

    /// The pids of the main service, or with none of every service: where
    /// USR1 and friends go.
    fn forward_targets(&self) -> Vec<i32> {
        let has_main = self.svcs.values().any(|s| s.spec.main);
        self.svcs
            .values()
            .filter(|s| s.role != Role::Step && (s.spec.main || !has_main))
            .flat_map(|s| s.procs.iter().filter_map(|p| p.m.pid()))
            .collect()
    }

    // ----- bookkeeping ---------------------------------------------------

    fn add(&mut self, spec: Service, role: Role) {
        let id = self.next_svc;
        self.next_svc = SvcId(id.0 + 1);
        let scale = spec.numprocesses.max(1) as usize;
        let mut procs = Vec::with_capacity(scale);
        for i in 0..scale {
            procs.push(self.new_slot(id, i));
        }
        let job = spec.schedule.is_some().then(Job::default);
        let mut policy = Policy::from_service(&spec);
        if job.is_some() {
            job_policy(&mut policy);
        }
        let svc = Svc {
            policy,
            // A job is started by its schedule, never by the start order.
            status: if spec.autostart && job.is_none() {
                Status::Pending
            } else {
                Status::Manual
            },
            spec: Arc::new(spec),
            role,
            procs,
            scale,
            readiness: None,
            liveness: None,
            facts: Facts::default(),
            stop_sent: false,
            job,
            watch_due: None,
            step: None,
        };
        self.svcs.insert(id, svc);
    }

    fn new_slot(&mut self, svc: SvcId, index: usize) -> Slot {
        let id = ProcId(self.next_proc);
        self.next_proc += 1;
        self.where_is.insert(id, (svc, index));
        Slot { id, m: Proc::new() }
    }

    fn find(&self, name: &str) -> Option<SvcId> {
        self.svcs
            .iter()
            .find(|(_, s)| s.name() == name && s.status != Status::Retired)
            .map(|(&id, _)| id)
    }

    fn svc_of(&self, proc: ProcId) -> Option<&Svc> {
        let (s, _) = self.where_is.get(&proc)?;
        self.svcs.get(s)
    }

    fn label_of(&self, proc: ProcId) -> Option<String> {
        let (s, i) = *self.where_is.get(&proc)?;
        let svc = self.svcs.get(&s)?;
        Some(label(&svc.spec, i))
    }

    fn ctx(&mut self, now: Instant) -> Ctx {
        self.rng = crate::units::xorshift_step(self.rng);
        let jitter = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        let grace_cap = match &self.stop.active {
            Some(st) => st.deadline.saturating_duration_since(now),
            None => self.stop.timeout,
        };
        Ctx {
            now,
            jitter,
            shutting_down: self.stop.active.is_some(),
            grace_cap,
        }
    }

    fn tick(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let due: Vec<ProcId> = self
            .svcs
            .values()
            .flat_map(|s| s.procs.iter())
            .filter(|p| p.m.deadline().is_some_and(|d| d <= now))
            .map(|p| p.id)
            .collect();
        for id in due {
            self.proc_event(id, Event::Tick, now, fx);
        }
        if self.warmup_until.is_some_and(|w| w <= now) {
            self.warmup_until = None;
        }
        if self.stop.active.is_none() {
            self.step_timeouts(now, fx);
        }
        if self.kill_deadline().is_some_and(|d| d <= now) {
            log::warn!("shutdown deadline reached: killing what is left");
            self.kill_all(now, fx);
        }
    }

    // ----- signals ---------------------------------------------------------

    fn on_signal(&mut self, sig: Signal, now: Instant, fx: &mut Vec<Effect>) {
        let short = crate::signals::short_name(sig);
        match sig {
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT if self.step_alone() => {
                self.step_interrupted(sig);
                if self.stop.active.is_some() {
                    self.kill_all(now, fx); // a second signal: now
                } else {
                    log::warn!("{short} received: stopping the step");
                    self.begin_stop(None, Cause::Requested(short.into()), now, fx);
                }
            }
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                if self.stop.active.is_some() {
                    log::warn!("second {short} during stop: killing everything now");
                    self.kill_all(now, fx);
                } else {
                    log::info!("{short} received: stopping");
                    // Like tini, the main command gets the very signal that
                    // asked for the stop (Ctrl-C stays SIGINT); configured
                    // services get their own stop_signal.
                    for s in self.svcs.values_mut().filter(|s| s.spec.main) {
                        s.policy.stop_signal = sig;
                    }
                    self.begin_stop(None, Cause::Requested(short.into()), now, fx);
                }
            }
            Signal::SIGCHLD | Signal::SIGPIPE | Signal::SIGTTIN | Signal::SIGTTOU => {}
            Signal::SIGHUP if self.can_reload => fx.push(Effect::Reload { conn: None }),
            other => {
                for pid in self.forward_targets() {
                    log::debug!(
                        "forwarding {} to pid {pid}",
                        crate::signals::short_name(other)
                    );
                    fx.push(Effect::Signal {
                        pid,
                        signal: other,
                        group: false,
                    });
                }
            }
        }
    }
}

/// `web`, or `web.2` for the second of several processes.
pub fn label(spec: &Service, index: usize) -> String {
    if spec.numprocesses > 1 {
        format!("{}.{}", spec.name, index + 1)
    } else {
        spec.name.clone()
    }
}

#[cfg(test)]
mod tests;
