//! The supervisor's policy, pure: `Core::handle(Input, now) -> Vec<Effect>`.
//!
//! The core owns every decision — what starts when, who stops when, what
//! the exit status is, what a reload changes — and performs no I/O: the
//! shell (`shell.rs`) carries the effects out and feeds what happened back
//! as the next inputs, never from inside `handle`. Time comes in as `now`;
//! the core says when it next needs to be woken (`next_deadline`) and the
//! shell then sends `Input::Tick`. Processes have stable ids (`ProcId`),
//! never reused, so a late event about an old process cannot touch a new one.

use super::machine::{Action, Ctx, Event, Policy, Proc, State};
use super::plan::{self, Node};
use crate::config::model::{ReadyCheck, Service};
use crate::ctl::proto::{Command, Reply};
use crate::error::EXIT_FAILURE;
use crate::proc::exit::Exit;
use crate::units::fmt_duration;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many processes are spawned per round, so that a stop
/// signal arriving during a start of thousands is read between batches.
pub const SPAWN_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeId(pub u64);

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
    /// A one-shot prepare step run through the same loop: its end ends
    /// the run, quietly.
    Job,
}

/// A valid new configuration, from SIGHUP or `ctl reload`.
#[derive(Debug, Clone)]
pub struct ReloadSet {
    pub services: Vec<Service>,
    /// `None`: the `ssh:` section did not change, the running sshd stays
    /// as it is; `Some(x)`: sshd becomes `x`.
    pub sshd: Option<Option<Service>>,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum Input {
    /// Time has passed: act on whatever is due.
    Tick,
    Exited {
        pid: i32,
        exit: Exit,
    },
    Spawned {
        proc: ProcId,
        pid: i32,
    },
    SpawnFailed {
        proc: ProcId,
        reason: String,
        /// For the main service: 127 (not found) or 126.
        status: i32,
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
        working_dir: Option<PathBuf>,
    },
    CancelProbe(ProbeId),
    Reply {
        conn: ConnId,
        reply: Reply,
    },
    /// Read the configuration again; answer with `Reloaded`.
    Reload {
        conn: Option<ConnId>,
    },
    /// A stop has begun (close watches; notify).
    StopBegan,
    /// Everything has ended: the launcher exits with this status.
    Exit(i32),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Status {
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
pub(super) struct Slot {
    pub id: ProcId,
    pub m: Proc,
}

/// The readiness check of a started service.
#[derive(Debug, Clone)]
pub(super) struct Readiness {
    pub ok: bool,
    /// Not ready by then: FAILED.
    pub deadline: Instant,
    pub next_at: Option<Instant>,
    pub running: Option<ProbeId>,
}

#[derive(Debug, Clone)]
pub(super) struct Svc {
    pub spec: Arc<Service>,
    pub role: Role,
    pub policy: Policy,
    pub procs: Vec<Slot>,
    /// How many processes run now: `numprocesses`, moved by incr/decr.
    pub scale: usize,
    pub status: Status,
    pub ready: Option<Readiness>,
    /// The stop signal went out during the shutdown.
    pub stop_sent: bool,
}

impl Svc {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn live(&self) -> bool {
        self.procs.iter().any(|p| p.m.is_live())
    }

    pub fn ready_ok(&self) -> bool {
        self.ready.as_ref().is_none_or(|r| r.ok)
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
        self.ready.as_ref().is_some_and(|r| r.running.is_some())
    }
}

struct Stopping {
    deadline: Instant,
    killed: bool,
}

pub struct Core {
    pub(super) svcs: BTreeMap<u32, Svc>,
    next_svc: u32,
    next_proc: u64,
    next_probe: u64,
    pids: HashMap<i32, ProcId>,
    where_is: HashMap<ProcId, (u32, usize)>,
    shutdown_timeout: Duration,
    pub(super) can_reload: bool,
    stopping: Option<Stopping>,
    /// Set by the first cause of a stop that decides the exit status.
    exit_code: Option<i32>,
    main_exit: Option<i32>,
    warmup_until: Option<Instant>,
    rng: u64,
    exited: bool,
}

pub struct CoreOptions {
    pub shutdown_timeout: Duration,
    /// SIGHUP and `ctl reload` read the config again (there is a file).
    pub can_reload: bool,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

impl Core {
    pub fn new(services: Vec<(Service, Role)>, opts: CoreOptions) -> Core {
        let mut core = Core {
            svcs: BTreeMap::new(),
            next_svc: 0,
            next_proc: 0,
            next_probe: 0,
            pids: HashMap::new(),
            where_is: HashMap::new(),
            shutdown_timeout: opts.shutdown_timeout,
            can_reload: opts.can_reload,
            stopping: None,
            exit_code: None,
            main_exit: None,
            warmup_until: None,
            rng: opts.seed | 1,
            exited: false,
        };
        for (spec, role) in services {
            core.add(spec, role);
        }
        core
    }

    /// Handle one input; the effects are the shell's to carry out, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Tick => self.tick(now, &mut fx),
            Input::Exited { pid, exit } => {
                if let Some(id) = self.pids.remove(&pid) {
                    self.proc_event(id, Event::Exited(exit), now, &mut fx);
                }
            }
            Input::Spawned { proc, pid } => {
                self.pids.insert(pid, proc);
                if let Some(name) = self.label_of(proc) {
                    log::debug!("{name}: started, pid {pid}");
                }
                self.proc_event(proc, Event::Spawned { pid }, now, &mut fx);
            }
            Input::SpawnFailed {
                proc,
                reason,
                status,
            } => {
                if self.svc_of(proc).is_some_and(|s| s.spec.main) {
                    self.main_exit = Some(status);
                }
                self.proc_event(proc, Event::SpawnFailed { reason }, now, &mut fx);
            }
            Input::ProbeDone { probe, ok } => self.probe_done(probe, ok, now, &mut fx),
            Input::Signal(sig) => self.on_signal(sig, now, &mut fx),
            Input::Ctl { conn, cmd } => {
                if let Some(reply) = self.command(conn, cmd, now, &mut fx) {
                    fx.push(Effect::Reply { conn, reply });
                }
            }
            Input::Reloaded { conn, result } => {
                let reply = self.reloaded(result, now, &mut fx);
                match conn {
                    Some(conn) => fx.push(Effect::Reply { conn, reply }),
                    None => log::info!(
                        "SIGHUP: {}",
                        reply.message.or(reply.error).unwrap_or_default()
                    ),
                }
            }
            Input::Sshd(want) => {
                self.set_sshd(want, now);
                self.stop_retired(now, &mut fx);
            }
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
            if let Some(r) = &s.ready {
                if r.running.is_none() && s.status == Status::Started {
                    consider(r.next_at);
                }
            }
        }
        if self.stopping.is_none() {
            consider(self.warmup_until);
        }
        if let Some(st) = &self.stopping {
            if !st.killed {
                consider(Some(st.deadline));
            }
        }
        at
    }

    /// Stop on the shell's own request (a job past its timeout): no
    /// signal to report, the stop as in README "Stopping".
    pub fn stop_now(&mut self, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.begin_stop(None, now, &mut fx);
        self.settle(now, &mut fx);
        fx
    }

    fn is_job(&self) -> bool {
        self.svcs.values().any(|s| s.role == Role::Job)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// The launcher's exit status, once everything has ended.
    pub fn exit_status(&self) -> i32 {
        self.exit_code
            .or(self.main_exit)
            .unwrap_or(crate::error::EXIT_OK)
    }

    /// The pids of the main service, or with none of every service: where
    /// USR1 and friends go.
    pub fn forward_targets(&self) -> Vec<i32> {
        let has_main = self.svcs.values().any(|s| s.spec.main);
        self.svcs
            .values()
            .filter(|s| s.spec.main || !has_main)
            .flat_map(|s| s.procs.iter().filter_map(|p| p.m.pid()))
            .collect()
    }

    // ----- bookkeeping ---------------------------------------------------

    pub(super) fn add(&mut self, spec: Service, role: Role) {
        let id = self.next_svc;
        self.next_svc += 1;
        let scale = spec.numprocesses.max(1) as usize;
        let mut procs = Vec::with_capacity(scale);
        for i in 0..scale {
            procs.push(self.new_slot(id, i));
        }
        let svc = Svc {
            policy: Policy::from_service(&spec),
            status: if spec.autostart {
                Status::Pending
            } else {
                Status::Manual
            },
            spec: Arc::new(spec),
            role,
            procs,
            scale,
            ready: None,
            stop_sent: false,
        };
        self.svcs.insert(id, svc);
    }

    fn new_slot(&mut self, svc: u32, index: usize) -> Slot {
        let id = ProcId(self.next_proc);
        self.next_proc += 1;
        self.where_is.insert(id, (svc, index));
        Slot { id, m: Proc::new() }
    }

    pub(super) fn find(&self, name: &str) -> Option<u32> {
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
        // xorshift64: jitter for backoff, no need for a crypto RNG.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        let grace_cap = match &self.stopping {
            Some(st) => st.deadline.saturating_duration_since(now),
            None => self.shutdown_timeout,
        };
        Ctx {
            now,
            jitter,
            shutting_down: self.stopping.is_some(),
            grace_cap,
        }
    }

    // ----- driving the process machines -----------------------------------

    pub(super) fn proc_event(&mut self, id: ProcId, ev: Event, now: Instant, fx: &mut Vec<Effect>) {
        let Some(&(s, i)) = self.where_is.get(&id) else {
            return;
        };
        let ctx = self.ctx(now);
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        let policy = svc.policy.clone();
        let Some(slot) = svc.procs.get_mut(i) else {
            return;
        };
        let actions = slot.m.next(ev, &policy, ctx);
        for a in actions {
            self.apply(s, i, id, a, now, fx);
        }
    }

    fn apply(
        &mut self,
        s: u32,
        i: usize,
        id: ProcId,
        a: Action,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(svc) = self.svcs.get(&s) else {
            return;
        };
        match a {
            Action::Spawn => fx.push(Effect::Spawn {
                proc: id,
                spec: svc.spec.clone(),
                index: i,
            }),
            Action::Signal(pid, signal) => fx.push(Effect::Signal {
                pid,
                signal,
                group: true,
            }),
            Action::Kill(pid) => fx.push(Effect::Signal {
                pid,
                signal: Signal::SIGKILL,
                group: true,
            }),
            Action::Backoff { at, exit } => log::warn!(
                "{}: {exit}; restarting in {}",
                label(&svc.spec, i),
                fmt_duration(at.saturating_duration_since(now))
            ),
            Action::Ended(exit) => self.on_ended(s, exit, now, fx),
            Action::Failed(reason) => self.on_failed(s, reason, now, fx),
        }
    }

    fn on_ended(&mut self, s: u32, exit: Option<Exit>, now: Instant, fx: &mut Vec<Effect>) {
        let Some(svc) = self.svcs.get(&s) else {
            return;
        };
        if svc.status == Status::Retired {
            return;
        }
        if svc.role == Role::Job {
            self.main_exit = exit.map(Exit::status);
            self.begin_stop(None, now, fx);
            return;
        }
        let (main, critical, name) = (svc.spec.main, svc.spec.critical, svc.name().to_string());
        if self.stopping.is_none() {
            if let Some(e) = exit {
                log::info!("{name}: ended ({e})");
            }
        }
        if main {
            if let Some(e) = exit {
                self.main_exit = Some(e.status());
            }
            self.begin_stop(None, now, fx);
        } else if critical && self.stopping.is_none() {
            log::error!("{name}: critical service ended: stopping everything");
            self.begin_stop(
                Some(exit.map(Exit::status).unwrap_or(EXIT_FAILURE)),
                now,
                fx,
            );
        }
    }

    pub(super) fn on_failed(&mut self, s: u32, reason: String, now: Instant, fx: &mut Vec<Effect>) {
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        if svc.role == Role::Job {
            svc.status = Status::Failed(reason);
            self.begin_stop(Some(EXIT_FAILURE), now, fx);
            return;
        }
        log::error!("{}: FAILED: {reason}", svc.name());
        if !matches!(svc.status, Status::Failed(_)) {
            svc.status = Status::Failed(reason);
        }
        let (main, critical) = (svc.spec.main, svc.spec.critical);
        if main {
            self.main_exit.get_or_insert(EXIT_FAILURE);
            self.begin_stop(None, now, fx);
        } else if critical {
            self.begin_stop(Some(EXIT_FAILURE), now, fx);
        }
    }

    /// Send `ev` to every process of service `s`.
    pub(super) fn svc_event(&mut self, s: u32, ev: &Event, now: Instant, fx: &mut Vec<Effect>) {
        let ids: Vec<ProcId> = self
            .svcs
            .get(&s)
            .map(|x| x.procs.iter().map(|p| p.id).collect())
            .unwrap_or_default();
        for id in ids {
            self.proc_event(id, ev.clone(), now, fx);
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
        let overdue = self
            .stopping
            .as_ref()
            .is_some_and(|st| !st.killed && st.deadline <= now);
        if overdue {
            log::warn!("shutdown deadline reached: killing what is left");
            self.kill_all(now, fx);
        }
    }

    // ----- signals ---------------------------------------------------------

    fn on_signal(&mut self, sig: Signal, now: Instant, fx: &mut Vec<Effect>) {
        let short = crate::signals::short_name(sig);
        match sig {
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT if self.is_job() => {
                if self.stopping.is_some() {
                    self.kill_all(now, fx); // a second signal: now
                } else {
                    log::warn!("{short} received: stopping the step");
                    self.begin_stop(None, now, fx);
                }
            }
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                if self.stopping.is_some() {
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
                    self.begin_stop(None, now, fx);
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

    // ----- starting --------------------------------------------------------

    /// After every input: continue the stop, or start what can start and
    /// notice when nothing is left to supervise.
    fn settle(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.stopping.is_none() {
            self.pump_starts(now, fx);
            self.start_due_probes(now, fx);
            self.check_all_done(now, fx);
        }
        // Forget retired services once they are down.
        self.svcs
            .retain(|_, s| !(s.status == Status::Retired && !s.live() && !s.probe_running()));
        let live: std::collections::HashSet<u32> = self.svcs.keys().copied().collect();
        self.where_is.retain(|_, (s, _)| live.contains(s));
        if self.stopping.is_some() {
            self.advance_stop(now, fx);
            let done = !self.svcs.values().any(|s| s.live() || s.probe_running());
            if done && !self.exited {
                self.exited = true;
                fx.push(Effect::Exit(self.exit_status()));
            }
        }
    }

    fn start_order(&self) -> Vec<u32> {
        let ids: Vec<u32> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.status != Status::Retired)
            .map(|(&id, _)| id)
            .collect();
        let nodes: Vec<Node> = ids
            .iter()
            .filter_map(|id| self.svcs.get(id).map(|s| Node::of(&s.spec)))
            .collect();
        plan::start_order(&nodes)
            .into_iter()
            .filter_map(|i| ids.get(i).copied())
            .collect()
    }

    fn pump_starts(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.warmup_until.is_some_and(|w| w > now) {
            return;
        }
        let mut budget = SPAWN_BATCH;
        for s in self.start_order() {
            if self.stopping.is_some() || budget == 0 {
                return;
            }
            let Some(svc) = self.svcs.get(&s) else {
                continue;
            };
            match svc.status {
                Status::Pending => {}
                Status::Started => {
                    // Processes not started yet (a big numprocesses, an incr).
                    budget = self.fill(s, budget, now, fx);
                    continue;
                }
                _ => continue,
            }
            let failed_dep = svc.spec.after.iter().find(|d| {
                self.find(d)
                    .and_then(|id| self.svcs.get(&id))
                    .is_some_and(|x| matches!(x.status, Status::Failed(_)))
            });
            if let Some(dep) = failed_dep {
                let reason = format!("not started: dependency {dep} failed");
                self.on_failed(s, reason, now, fx);
                continue;
            }
            let deps_up = svc.spec.after.iter().all(|d| {
                self.find(d)
                    .and_then(|id| self.svcs.get(&id))
                    .is_none_or(Svc::is_up)
            });
            // A service replaced by a reload starts once its old self is down.
            let old_live = self
                .svcs
                .values()
                .any(|o| o.status == Status::Retired && o.live() && o.name() == svc.name());
            if !deps_up || old_live {
                continue;
            }
            let warmup = svc.spec.warmup_delay;
            self.begin_service(s, now);
            budget = self.fill(s, budget, now, fx);
            if !warmup.is_zero() {
                self.warmup_until = Some(now + warmup);
                return;
            }
        }
    }

    /// Mark a service started and arm its readiness check.
    pub(super) fn begin_service(&mut self, s: u32, now: Instant) {
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        svc.status = Status::Started;
        svc.ready = svc.spec.ready.as_ref().map(|r| Readiness {
            ok: false,
            deadline: now + r.timeout,
            next_at: Some(now),
            running: None,
        });
    }

    /// Start the idle processes of a started service, within `budget`.
    fn fill(&mut self, s: u32, mut budget: usize, now: Instant, fx: &mut Vec<Effect>) -> usize {
        let idle: Vec<ProcId> = self
            .svcs
            .get(&s)
            .map(|x| {
                x.procs
                    .iter()
                    .take(x.scale)
                    .filter(|p| p.m.state == State::Idle)
                    .map(|p| p.id)
                    .collect()
            })
            .unwrap_or_default();
        for id in idle {
            if budget == 0 {
                break;
            }
            budget -= 1;
            self.proc_event(id, Event::Start, now, fx);
        }
        budget
    }

    /// Restart processes that should run again (a `ctl start` of an ended
    /// service, an `incr` past a stopped slot).
    pub(super) fn start_procs(&mut self, s: u32, now: Instant, fx: &mut Vec<Effect>) {
        let ids: Vec<ProcId> = self
            .svcs
            .get(&s)
            .map(|x| x.procs.iter().take(x.scale).map(|p| p.id).collect())
            .unwrap_or_default();
        for id in ids {
            self.proc_event(id, Event::Start, now, fx);
        }
    }

    pub(super) fn grow(&mut self, s: u32) -> Option<usize> {
        let (len, scale) = self.svcs.get(&s).map(|x| (x.procs.len(), x.scale))?;
        if len <= scale {
            let slot = self.new_slot(s, len);
            self.svcs.get_mut(&s)?.procs.push(slot);
        }
        let svc = self.svcs.get_mut(&s)?;
        svc.scale += 1;
        Some(svc.scale)
    }

    fn check_all_done(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let waiting = self.svcs.values().any(|s| {
            s.live()
                || s.probe_running()
                || matches!(s.status, Status::Manual | Status::Pending)
                || s.procs.iter().any(|p| {
                    matches!(p.m.state, State::Backoff { .. } | State::Idle)
                        && s.status == Status::Started
                })
        });
        if waiting {
            return;
        }
        let failed = self
            .svcs
            .values()
            .any(|s| matches!(s.status, Status::Failed(_)));
        if self.svcs.values().all(|s| s.status == Status::Retired) {
            log::info!("nothing to supervise");
        } else {
            log::info!("every service has ended");
        }
        let code = if failed {
            EXIT_FAILURE
        } else {
            crate::error::EXIT_OK
        };
        self.begin_stop(Some(code), now, fx);
    }

    // ----- readiness -------------------------------------------------------

    fn start_due_probes(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let mut next_probe = self.next_probe;
        for svc in self.svcs.values_mut() {
            if svc.status != Status::Started {
                continue;
            }
            let (Some(r), Some(check)) = (&mut svc.ready, svc.spec.ready.as_ref()) else {
                continue;
            };
            if r.ok || r.running.is_some() || r.next_at.is_none_or(|t| t > now) {
                continue;
            }
            let probe = ProbeId(next_probe);
            next_probe += 1;
            r.running = Some(probe);
            r.next_at = None;
            fx.push(Effect::Probe {
                probe,
                service: svc.spec.name.clone(),
                check: check.check.clone(),
                // A probe never outlives the readiness deadline (by much).
                timeout: r
                    .deadline
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(10)),
                working_dir: svc.spec.working_dir.clone(),
            });
        }
        self.next_probe = next_probe;
    }

    fn probe_done(&mut self, probe: ProbeId, ok: bool, now: Instant, fx: &mut Vec<Effect>) {
        let Some((&s, svc)) = self
            .svcs
            .iter_mut()
            .find(|(_, x)| x.ready.as_ref().is_some_and(|r| r.running == Some(probe)))
        else {
            return;
        };
        let Some(r) = svc.ready.as_mut() else {
            return;
        };
        r.running = None;
        if self.stopping.is_some() || svc.status != Status::Started {
            return;
        }
        let (timeout, interval) = svc
            .spec
            .ready
            .as_ref()
            .map(|c| (c.timeout, c.interval))
            .unwrap_or_default();
        if ok {
            r.ok = true;
            log::info!("{}: ready", svc.spec.name);
        } else if now >= r.deadline {
            let reason = format!("not ready after {}", fmt_duration(timeout));
            self.svc_event(s, &Event::Stop, now, fx);
            self.on_failed(s, reason, now, fx);
        } else {
            r.next_at = Some(now + interval);
        }
    }

    // ----- stopping ----------------------------------------------------------

    /// Start the graceful stop. `code` decides the exit status unless an
    /// earlier cause already did.
    pub(super) fn begin_stop(&mut self, code: Option<i32>, now: Instant, fx: &mut Vec<Effect>) {
        if let Some(c) = code {
            self.exit_code.get_or_insert(c);
        }
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(Stopping {
            deadline: now + self.shutdown_timeout,
            killed: false,
        });
        fx.push(Effect::StopBegan);
        // Nothing waiting for a restart comes back; no probe goes on.
        let waiting: Vec<ProcId> = self
            .svcs
            .values()
            .flat_map(|s| s.procs.iter())
            .filter(|p| matches!(p.m.state, State::Backoff { .. }))
            .map(|p| p.id)
            .collect();
        for id in waiting {
            self.proc_event(id, Event::Stop, now, fx);
        }
        self.cancel_probes(fx);
    }

    fn cancel_probes(&mut self, fx: &mut Vec<Effect>) {
        for svc in self.svcs.values_mut() {
            if let Some(r) = &mut svc.ready {
                if let Some(p) = r.running.take() {
                    fx.push(Effect::CancelProbe(p));
                }
                r.next_at = None;
            }
        }
    }

    /// Signal every live service whose waits (README "Stopping") are over.
    fn advance_stop(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let ids: Vec<u32> = self.svcs.keys().copied().collect();
        let nodes: Vec<Node> = ids
            .iter()
            .filter_map(|id| self.svcs.get(id).map(|s| Node::of(&s.spec)))
            .collect();
        let live: Vec<bool> = ids
            .iter()
            .map(|id| self.svcs.get(id).is_some_and(Svc::live))
            .collect();
        let mut ready_to_stop = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let Some(svc) = self.svcs.get(id) else {
                continue;
            };
            if svc.stop_sent || !live.get(i).copied().unwrap_or(false) {
                continue;
            }
            let blocked = plan::stop_waits_for(&nodes, i)
                .into_iter()
                .any(|j| live.get(j).copied().unwrap_or(false));
            if !blocked {
                ready_to_stop.push(*id);
            }
        }
        for id in ready_to_stop {
            if let Some(svc) = self.svcs.get_mut(&id) {
                svc.stop_sent = true;
            }
            self.svc_event(id, &Event::Stop, now, fx);
        }
    }

    fn kill_all(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if let Some(st) = &mut self.stopping {
            st.killed = true;
        }
        let live: Vec<ProcId> = self
            .svcs
            .values()
            .flat_map(|s| s.procs.iter())
            .filter(|p| p.m.is_live())
            .map(|p| p.id)
            .collect();
        for id in live {
            self.proc_event(id, Event::Kill, now, fx);
        }
        self.cancel_probes(fx);
    }

    // ----- reload and sshd ---------------------------------------------------

    /// Retire service `s`: it stops, and is forgotten once down.
    pub(super) fn retire(&mut self, s: u32, now: Instant, fx: &mut Vec<Effect>) {
        if let Some(svc) = self.svcs.get_mut(&s) {
            svc.status = Status::Retired;
            if let Some(r) = &mut svc.ready {
                if let Some(p) = r.running.take() {
                    fx.push(Effect::CancelProbe(p));
                }
            }
        }
        self.svc_event(s, &Event::Stop, now, fx);
    }

    fn reloaded(
        &mut self,
        result: Result<ReloadSet, String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) -> Reply {
        let set = match result {
            Ok(set) => set,
            Err(text) => {
                for line in text.lines() {
                    log::error!("reload refused: {line}");
                }
                return Reply::error(format!("invalid config, nothing changed:\n{text}"));
            }
        };
        if self.stopping.is_some() {
            return Reply::error("the launcher is stopping");
        }
        let old: Vec<(u32, Arc<Service>)> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.role == Role::Config && s.status != Status::Retired)
            .map(|(&id, s)| (id, s.spec.clone()))
            .collect();
        let old_refs: Vec<&Service> = old.iter().map(|(_, s)| s.as_ref()).collect();
        let mut d = plan::diff(&old_refs, &set.services);
        for (id, spec) in &old {
            if d.removed.contains(&spec.name) || d.changed.contains(&spec.name) {
                self.retire(*id, now, fx);
            }
        }
        for spec in set.services {
            if d.added.contains(&spec.name) || d.changed.contains(&spec.name) {
                self.add(spec, Role::Config);
            }
        }
        if let Some(want) = set.sshd {
            match self.set_sshd(want, now) {
                SshdChange::Added => d.added.push("sshd".into()),
                SshdChange::Removed => d.removed.push("sshd".into()),
                SshdChange::Changed => d.changed.push("sshd".into()),
                SshdChange::None => {}
            }
            // set_sshd retires without effects: stop what it retired now.
            self.stop_retired(now, fx);
        }
        self.shutdown_timeout = set.shutdown_timeout;
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(" ")
            }
        };
        let message = format!(
            "reloaded: {} added, {} removed, {} changed",
            list(&d.added),
            list(&d.removed),
            list(&d.changed)
        );
        Reply {
            ok: true,
            message: Some(message),
            added: Some(d.added),
            removed: Some(d.removed),
            changed: Some(d.changed),
            ..Reply::default()
        }
    }

    /// Make sshd what the keys ask for (README "SSH keys": with `sshd:
    /// auto` it starts with the first valid key and stops with the last).
    fn set_sshd(&mut self, want: Option<Service>, now: Instant) -> SshdChange {
        let current = self
            .svcs
            .iter()
            .find(|(_, s)| s.role == Role::Sshd && s.status != Status::Retired)
            .map(|(&id, s)| (id, s.spec.clone()));
        let change = match (&current, &want) {
            (None, None) => return SshdChange::None,
            (Some((_, cur)), Some(new)) if plan::same_definition(cur, new) => {
                return SshdChange::None
            }
            (None, Some(_)) => SshdChange::Added,
            (Some(_), None) => SshdChange::Removed,
            (Some(_), Some(_)) => SshdChange::Changed,
        };
        if self.stopping.is_some() {
            return SshdChange::None;
        }
        if let Some((id, _)) = current {
            if let Some(svc) = self.svcs.get_mut(&id) {
                svc.status = Status::Retired;
                svc.stop_sent = false;
            }
        }
        match change {
            SshdChange::Added => log::info!("sshd: starting (a valid key is installed)"),
            SshdChange::Removed => log::info!("sshd: stopping (no key left)"),
            _ => log::info!("sshd: restarting (its settings changed)"),
        }
        if let Some(spec) = want {
            self.add(spec, Role::Sshd);
        }
        let _ = now;
        change
    }

    /// Send the stop to retired services that still run.
    fn stop_retired(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let ids: Vec<u32> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.status == Status::Retired && s.live())
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.retire(id, now, fx);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SshdChange {
    None,
    Added,
    Removed,
    Changed,
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
