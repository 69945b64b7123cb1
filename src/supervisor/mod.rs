//! Supervision: one event loop, driven by signals, child exits, output pipes
//! and timers, with no periodic wake-up.
//!
//! Each process's life is the pure state machine of `machine`; this module
//! turns the world into events for it and carries out the actions it returns.
//! Services start in dependency order (`after`, then `priority`) and stop in
//! the reverse order, one level at a time, within one global deadline.

pub mod machine;

use crate::config::model::{Config, ReadyCheck, Service, Stream};
use crate::proc::exit::Exit;
use crate::proc::{output, reap::children_of, spawn, watch};
use crate::signals::{Received, SignalSource};
use crate::units::fmt_duration;
use machine::{Action, Ctx, Event, Policy, Proc, State};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
enum SvcStatus {
    /// Waiting for its dependencies or its turn.
    Pending,
    /// `autostart: false`, or stopped with `ctl stop`: only started on request.
    Manual,
    Started,
    Failed(String),
    /// Removed or replaced by a reload: stopping, then its slot is reused.
    Retired,
}

/// Reloads the configuration (SIGHUP, `ctl reload`): the new config and its
/// services (without the main one), or every error found.
pub type Reloader = Box<dyn FnMut() -> Result<(Config, Vec<Service>), Vec<crate::error::Diag>>>;

struct Svc {
    spec: Service,
    policy: Policy,
    procs: Vec<Proc>,
    status: SvcStatus,
    /// Readiness passed (true at once for a service without a check).
    ready: bool,
    ready_deadline: Option<Instant>,
    probe: Option<i32>,
    /// Dependency level: 0 without `after`, else 1 + the deepest dependency's.
    level: u32,
    deps: Vec<usize>,
}

impl Svc {
    fn is_up(&self) -> bool {
        self.status == SvcStatus::Started
            && self.ready
            && self
                .procs
                .iter()
                .take(self.spec.numprocesses as usize)
                .all(|p| matches!(p.state, State::Running { .. }))
    }

    fn live(&self) -> bool {
        self.procs.iter().any(Proc::is_live)
    }

    /// A slot that holds nothing any more and can take a new service.
    fn reusable(&self) -> bool {
        self.status == SvcStatus::Retired && !self.live() && self.probe.is_none()
    }

    /// The processes that count: those within `numprocesses` (after a
    /// `decr`, the extra ones stop and are then ignored).
    fn active_procs(&self) -> impl Iterator<Item = (usize, &Proc)> {
        let n = self.spec.numprocesses as usize;
        self.procs
            .iter()
            .enumerate()
            .filter(move |(i, p)| *i < n || p.is_live())
    }

    /// Stop order key: higher levels stop first; among peers, lower priority first.
    fn stop_key(&self) -> (u32, Reverse<i64>) {
        (self.level, Reverse(self.spec.priority))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Proc(usize, usize),
    Probe(usize),
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Backoff {
        svc: usize,
        idx: usize,
        gen: u64,
    },
    Grace {
        svc: usize,
        idx: usize,
        gen: u64,
    },
    MaxAge {
        svc: usize,
        idx: usize,
        gen: u64,
    },
    ReadyPoll(usize),
    Warmup,
    Deadline,
    /// Debounced re-sync of the SSH keys after a change in their directories.
    KeysResync,
}

struct Stopping {
    deadline: Instant,
    forced: bool,
}

pub struct Supervisor {
    cfg: Config,
    svcs: Vec<Svc>,
    /// Start plan: indices in dependency order, then priority (higher first).
    plan: Vec<usize>,
    pids: HashMap<i32, Owner>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_kinds: HashMap<u64, Timer>,
    timer_seq: u64,
    readers: Vec<Option<output::Reader>>,
    files: Vec<output::FileOut>,
    stopping: Option<Stopping>,
    /// Set by the first cause of a stop that decides the exit status.
    exit_code: Option<i32>,
    main_exit: Option<i32>,
    warmup_until: Option<Instant>,
    /// Processes to start again once they have ended (max_age).
    restart_after_stop: Vec<(usize, usize)>,
    is_pid1: bool,
    stdin_tty: bool,
    rng: u64,
    signals: SignalSource,
    ctl: Option<crate::ctl::server::Server>,
    reloader: Option<Reloader>,
    keys: Option<watch::KeyWatch>,
    keys_resync_pending: bool,
    on_keys_changed: Option<KeysChanged>,
}

/// What `run` needs beyond the services.
pub struct RunOptions {
    /// SIGHUP / `ctl reload`.
    pub reloader: Option<Reloader>,
    /// Called (debounced) after a change in the SSH key directories; with
    /// `None` they are not watched.
    pub on_keys_changed: Option<KeysChanged>,
}

/// Applies the key directories again while running (`ssh.watch`).
pub type KeysChanged = Box<dyn FnMut(&Config)>;

/// Supervise `services` (already including the main service, if any) until
/// everything has ended; return the launcher's exit status.
pub fn run(cfg: Config, services: Vec<Service>, signals: SignalSource, opts: RunOptions) -> i32 {
    let mut sup = Supervisor::new(cfg, services, signals);
    sup.reloader = opts.reloader;
    sup.ctl = crate::ctl::server::Server::bind(&sup.cfg);
    if opts.on_keys_changed.is_some() {
        sup.keys = watch::KeyWatch::new(&sup.cfg.ssh.keys_dirs);
    }
    sup.on_keys_changed = opts.on_keys_changed;
    sup.pump_starts();
    sup.check_all_done();
    sup.run_loop();
    sup.finish()
}

impl Supervisor {
    fn new(cfg: Config, services: Vec<Service>, signals: SignalSource) -> Supervisor {
        let is_pid1 = std::process::id() == 1;
        if !is_pid1 {
            // Orphans of our services are re-parented to us, so we reap them.
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                log::warn!("cannot become a child subreaper: {e}");
            }
        }
        let svcs: Vec<Svc> = services.into_iter().map(|spec| new_slot(spec, 0)).collect();
        let seed = Instant::now().elapsed().as_nanos() as u64
            ^ (std::process::id() as u64).rotate_left(32)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9e37_79b9);
        let mut sup = Supervisor {
            cfg,
            svcs,
            plan: Vec::new(),
            pids: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_kinds: HashMap::new(),
            timer_seq: 0,
            readers: Vec::new(),
            files: Vec::new(),
            stopping: None,
            exit_code: None,
            main_exit: None,
            warmup_until: None,
            restart_after_stop: Vec::new(),
            is_pid1,
            stdin_tty: nix::unistd::isatty(std::io::stdin()).unwrap_or(false),
            rng: seed | 1,
            signals,
            ctl: None,
            reloader: None,
            keys: None,
            keys_resync_pending: false,
            on_keys_changed: None,
        };
        sup.replan();
        sup
    }

    /// Recompute dependencies, levels and the start plan from the names of
    /// the services in place (after start or a reload).
    fn replan(&mut self) {
        let index: HashMap<String, usize> = self
            .svcs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status != SvcStatus::Retired)
            .map(|(i, s)| (s.spec.name.clone(), i))
            .collect();
        for s in &mut self.svcs {
            s.deps = s
                .spec
                .after
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect();
        }
        compute_levels(&mut self.svcs);
        // The main service starts after every configured one and stops first.
        let top = self
            .svcs
            .iter()
            .filter(|s| !s.spec.main)
            .map(|s| s.level)
            .max()
            .unwrap_or(0);
        for s in self.svcs.iter_mut().filter(|s| s.spec.main) {
            s.level = top + 1;
        }
        let mut plan: Vec<usize> = (0..self.svcs.len()).collect();
        let svcs = &self.svcs;
        plan.sort_by_key(|&i| svcs.get(i).map(|s| (s.level, Reverse(s.spec.priority), i)));
        self.plan = plan;
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.svcs
            .iter()
            .position(|s| s.spec.name == name && s.status != SvcStatus::Retired)
    }

    // ----- the loop -------------------------------------------------------

    fn run_loop(&mut self) {
        while !self.finished() {
            let timeout = match self.timers.peek() {
                Some(Reverse((at, _))) => {
                    let d = at.saturating_duration_since(Instant::now());
                    // Round up so we never wake just before a deadline and spin.
                    let ms = d
                        .as_millis()
                        .saturating_add(u128::from(d.subsec_nanos() % 1_000_000 != 0));
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let keys_ready;
            let (sig_ready, ready_readers, listener_ready, ready_conns) = {
                // Order of the poll set: signals, output pipes, the control
                // listener, control connections.
                let mut fds = Vec::with_capacity(3 + self.readers.len());
                fds.push(PollFd::new(self.signals.fd(), PollFlags::POLLIN));
                let keys_slot = self.keys.as_ref().map(|k| {
                    fds.push(PollFd::new(k.fd(), PollFlags::POLLIN));
                    fds.len() - 1
                });
                let first_reader = fds.len();
                let mut slots = Vec::with_capacity(self.readers.len());
                for (i, r) in self.readers.iter().enumerate() {
                    if let Some(r) = r {
                        fds.push(PollFd::new(r.fd(), PollFlags::POLLIN));
                        slots.push(i);
                    }
                }
                let n_readers = fds.len();
                let mut conn_slots = Vec::new();
                if let Some(ctl) = &self.ctl {
                    fds.push(PollFd::new(ctl.listener_fd(), PollFlags::POLLIN));
                    for (i, c) in ctl.conns.iter().enumerate() {
                        if let Some(c) = c {
                            fds.push(PollFd::new(c.fd(), PollFlags::POLLIN));
                            conn_slots.push(i);
                        }
                    }
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => log::error!("poll failed: {e}"),
                }
                let is_ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let sig_ready = fds.first().is_some_and(is_ready);
                keys_ready = keys_slot.and_then(|i| fds.get(i)).is_some_and(is_ready);
                let ready: Vec<usize> = fds
                    .iter()
                    .take(n_readers)
                    .skip(first_reader)
                    .zip(slots.iter())
                    .filter(|(f, _)| is_ready(f))
                    .map(|(_, &i)| i)
                    .collect();
                let listener_ready = fds.get(n_readers).is_some_and(is_ready);
                let conns: Vec<usize> = fds
                    .iter()
                    .skip(n_readers + 1)
                    .zip(conn_slots.iter())
                    .filter(|(f, _)| is_ready(f))
                    .map(|(_, &i)| i)
                    .collect();
                (sig_ready, ready, listener_ready, conns)
            };
            for i in ready_readers {
                self.drain_reader(i);
            }
            if keys_ready {
                if let Some(k) = &mut self.keys {
                    k.drain();
                }
                // Editors and `cp` make bursts of events: wait for quiet.
                if !self.keys_resync_pending {
                    self.keys_resync_pending = true;
                    self.add_timer(
                        Instant::now() + Duration::from_millis(300),
                        Timer::KeysResync,
                    );
                }
            }
            if listener_ready {
                if let Some(ctl) = &mut self.ctl {
                    ctl.accept();
                }
            }
            for i in ready_conns {
                self.serve_conn(i);
            }
            if sig_ready {
                for r in self.signals.drain() {
                    // Tests of the panic hook only (cargo feature
                    // fault-injection, never in a release build).
                    #[cfg(feature = "fault-injection")]
                    if r.signal == Signal::SIGUSR2
                        && std::env::var_os("MC_FAULT").is_some_and(|v| v == "panic-on-usr2")
                    {
                        panic!("fault injection: MC_FAULT=panic-on-usr2");
                    }
                    self.on_signal(r);
                }
            }
            self.fire_timers();
        }
    }

    fn finished(&self) -> bool {
        self.stopping.is_some()
            && !self.svcs.iter().any(Svc::live)
            && self.svcs.iter().all(|s| s.probe.is_none())
    }

    fn drain_reader(&mut self, i: usize) {
        let closed = match self.readers.get_mut(i) {
            Some(Some(r)) => matches!(output::drain(r, &mut self.files), output::Drained::Closed),
            _ => false,
        };
        if closed {
            if let Some(slot) = self.readers.get_mut(i) {
                *slot = None;
            }
        }
    }

    // ----- signals and reaping ------------------------------------------

    fn on_signal(&mut self, r: Received) {
        match r.signal {
            Signal::SIGCHLD => self.reap(),
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                if self.stopping.is_some() {
                    log::warn!(
                        "second {} during stop: killing everything now",
                        crate::signals::short_name(r.signal)
                    );
                    self.kill_all();
                } else {
                    log::info!(
                        "{} received: stopping",
                        crate::signals::short_name(r.signal)
                    );
                    // Like tini, the main command gets the very signal that
                    // asked for the stop (Ctrl-C stays SIGINT); configured
                    // services get their own stop_signal.
                    for s in self.svcs.iter_mut().filter(|s| s.spec.main) {
                        s.policy.stop_signal = r.signal;
                    }
                    self.begin_stop(None);
                }
            }
            Signal::SIGPIPE | Signal::SIGTTIN | Signal::SIGTTOU => {}
            Signal::SIGHUP if self.reloader.is_some() => {
                let reply = self.reload();
                log::info!(
                    "SIGHUP: {}",
                    reply.get("message").and_then(|m| m.as_str()).unwrap_or("")
                );
            }
            other => self.forward(other),
        }
    }

    /// Forward a signal to the main service, or with none to every service.
    fn forward(&self, sig: Signal) {
        let has_main = self.svcs.iter().any(|s| s.spec.main);
        for s in self.svcs.iter().filter(|s| s.spec.main || !has_main) {
            for p in &s.procs {
                if let Some(pid) = p.pid() {
                    log::debug!(
                        "forwarding {} to {} (pid {pid})",
                        crate::signals::short_name(sig),
                        s.spec.name
                    );
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                }
            }
        }
    }

    /// Collect every child that has ended, ours or re-parented orphans.
    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("waitpid failed: {e}");
                    break;
                }
            };
            match self.pids.remove(&pid.as_raw()) {
                Some(Owner::Proc(s, i)) => self.proc_event(s, i, Event::Exited(exit)),
                Some(Owner::Probe(s)) => self.on_probe_exit(s, exit),
                // A process of a slot reused after a reload ended late.
                None => log::debug!("reaped orphan {pid} ({exit})"),
            }
        }
    }

    // ----- timers -------------------------------------------------------

    fn add_timer(&mut self, at: Instant, kind: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq)));
        self.timer_kinds.insert(self.timer_seq, kind);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(kind) = self.timer_kinds.remove(&seq) else {
                continue;
            };
            match kind {
                Timer::Backoff { svc, idx, gen } => {
                    self.proc_timer(svc, idx, gen, Event::BackoffDone)
                }
                Timer::Grace { svc, idx, gen } => self.proc_timer(svc, idx, gen, Event::GraceOver),
                Timer::MaxAge { svc, idx, gen } => {
                    if self.proc_gen(svc, idx) == Some(gen) && self.stopping.is_none() {
                        log::info!("{}: max_age reached, restarting", self.name(svc));
                        self.restart_after_stop.push((svc, idx));
                        self.proc_event(svc, idx, Event::Stop);
                    }
                }
                Timer::ReadyPoll(svc) => self.ready_poll(svc),
                Timer::Warmup => {
                    self.warmup_until = None;
                    self.pump_starts();
                }
                Timer::KeysResync => {
                    self.keys_resync_pending = false;
                    if let Some(k) = &mut self.keys {
                        k.rewatch();
                    }
                    if let Some(f) = &mut self.on_keys_changed {
                        f(&self.cfg);
                    }
                }
                Timer::Deadline => {
                    if self.stopping.is_some() {
                        log::warn!("shutdown deadline reached: killing what is left");
                        self.kill_all();
                    }
                }
            }
        }
    }

    fn proc_gen(&self, s: usize, i: usize) -> Option<u64> {
        self.svcs.get(s)?.procs.get(i).map(|p| p.generation)
    }

    fn proc_timer(&mut self, s: usize, i: usize, gen: u64, ev: Event) {
        if self.proc_gen(s, i) == Some(gen) {
            self.proc_event(s, i, ev);
        }
    }

    // ----- driving the state machines -----------------------------------

    fn ctx(&mut self) -> Ctx {
        let now = Instant::now();
        // xorshift64: jitter for backoff, no need for a crypto RNG.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        let grace_cap = match &self.stopping {
            Some(st) => st.deadline.saturating_duration_since(now),
            None => self.cfg.shutdown.timeout,
        };
        Ctx {
            now,
            jitter,
            shutting_down: self.stopping.is_some(),
            grace_cap,
        }
    }

    fn name(&self, s: usize) -> &str {
        self.svcs
            .get(s)
            .map(|x| x.spec.name.as_str())
            .unwrap_or("?")
    }

    fn proc_event(&mut self, s: usize, i: usize, ev: Event) {
        let ctx = self.ctx();
        let Some(svc) = self.svcs.get_mut(s) else {
            return;
        };
        let policy = svc.policy.clone();
        let Some(p) = svc.procs.get_mut(i) else {
            return;
        };
        let actions = p.next(ev, &policy, ctx);
        self.apply(s, i, actions);
    }

    fn apply(&mut self, s: usize, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Spawn => {
                    let ev = self.spawn_proc(s, i);
                    self.proc_event(s, i, ev);
                }
                Action::Signal(pid, sig) => spawn::signal_group(pid, sig),
                Action::Kill(pid) => spawn::signal_group(pid, Signal::SIGKILL),
                Action::BackoffTimer(at) => {
                    if let Some(gen) = self.proc_gen(s, i) {
                        let last = self
                            .svcs
                            .get(s)
                            .and_then(|x| x.procs.get(i))
                            .and_then(|p| p.last_exit);
                        let delay = at.saturating_duration_since(Instant::now());
                        log::warn!(
                            "{}: {}; restarting in {}",
                            self.name(s),
                            last.map(|e| e.to_string()).unwrap_or_default(),
                            fmt_duration(delay)
                        );
                        self.add_timer(
                            at,
                            Timer::Backoff {
                                svc: s,
                                idx: i,
                                gen,
                            },
                        );
                    }
                }
                Action::GraceTimer(at) => {
                    if let Some(gen) = self.proc_gen(s, i) {
                        self.add_timer(
                            at,
                            Timer::Grace {
                                svc: s,
                                idx: i,
                                gen,
                            },
                        );
                    }
                }
                Action::Ended(exit) => self.on_proc_ended(s, i, exit),
                Action::Failed(reason) => self.on_proc_failed(s, reason),
            }
        }
    }

    fn spawn_proc(&mut self, s: usize, i: usize) -> Event {
        let Some(svc) = self.svcs.get(s) else {
            return Event::SpawnFailed {
                reason: "unknown service".into(),
            };
        };
        let spec = svc.spec.clone();
        let creds = match spawn::resolve_creds(&spec) {
            Ok(c) => c,
            Err(reason) => return Event::SpawnFailed { reason },
        };
        let label = if spec.numprocesses > 1 {
            format!("{}.{}", spec.name, i + 1)
        } else {
            spec.name.clone()
        };
        let mut new_readers = Vec::new();
        let mut out = |stream: &Stream,
                       err: bool,
                       files: &mut Vec<output::FileOut>|
         -> std::io::Result<spawn::Out> {
            Ok(match stream {
                Stream::Inherit => spawn::Out::Inherit,
                Stream::Null => spawn::Out::Null,
                Stream::Prefix => {
                    let (r, w) = output::pipe()?;
                    let mark = if err { '!' } else { '|' };
                    let sink = output::Sink::Prefixed {
                        prefix: format!("{label} {mark} ").into_bytes(),
                        to_stderr: err,
                    };
                    new_readers.push(output::reader(r, sink));
                    spawn::Out::Pipe(w)
                }
                Stream::File(fs) => {
                    let idx = match files.iter().position(|f| f.path() == &fs.path) {
                        Some(idx) => idx,
                        None => {
                            files.push(output::FileOut::new(fs.clone()));
                            files.len() - 1
                        }
                    };
                    let (r, w) = output::pipe()?;
                    new_readers.push(output::reader(r, output::Sink::File(idx)));
                    spawn::Out::Pipe(w)
                }
            })
        };
        let outs = out(&spec.stdout, false, &mut self.files)
            .and_then(|o| Ok((o, out(&spec.stderr, true, &mut self.files)?)));
        let (stdout, stderr) = match outs {
            Ok(pair) => pair,
            Err(e) => {
                return Event::SpawnFailed {
                    reason: format!("cannot create output pipes: {e}"),
                }
            }
        };
        let env = spawn::service_env(&self.cfg, &spec, creds.as_ref());
        let res = spawn::spawn(spawn::SpawnOpts {
            argv: &spec.argv,
            env,
            copy_env: spec.copy_env,
            working_dir: spec.working_dir.as_deref(),
            creds: creds.as_ref(),
            rlimits: &spec.rlimits,
            stdout,
            stderr,
            foreground: spec.main && self.stdin_tty,
            stdin_null: !spec.main,
        });
        match res {
            Ok(pid) => {
                self.pids.insert(pid, Owner::Proc(s, i));
                for r in new_readers {
                    self.readers.push(Some(r));
                }
                log::debug!("{label}: started, pid {pid}");
                if let Some((age, variance)) = spec.max_age {
                    let share = (self.rng % 1000) as f64 / 1000.0;
                    let extra = crate::units::duration_from_secs(variance.as_secs_f64() * share)
                        .unwrap_or_default();
                    // The generation after `Spawned` is the current one + 1.
                    if let Some(gen) = self.proc_gen(s, i) {
                        self.add_timer(
                            Instant::now() + age + extra,
                            Timer::MaxAge {
                                svc: s,
                                idx: i,
                                gen: gen + 1,
                            },
                        );
                    }
                }
                Event::Spawned { pid }
            }
            Err(e) => {
                let prog = spec.argv.first().map(String::as_str).unwrap_or("");
                if spec.main {
                    self.main_exit = Some(spawn::exec_error_status(&e));
                }
                Event::SpawnFailed {
                    reason: format!("cannot run {prog}: {e}"),
                }
            }
        }
    }

    fn on_proc_ended(&mut self, s: usize, i: usize, exit: Option<Exit>) {
        if let Some(pos) = self.restart_after_stop.iter().position(|&x| x == (s, i)) {
            self.restart_after_stop.swap_remove(pos);
            if self.stopping.is_none() {
                self.proc_event(s, i, Event::Start);
                return;
            }
        }
        let (main, critical, name, retired) = match self.svcs.get(s) {
            Some(x) => (
                x.spec.main,
                x.spec.critical,
                x.spec.name.clone(),
                x.status == SvcStatus::Retired,
            ),
            None => return,
        };
        if retired {
            self.after_change();
            return;
        }
        if self.stopping.is_none() {
            if let Some(e) = exit {
                log::info!("{name}: ended ({e})");
            }
        }
        if main {
            if let Some(e) = exit {
                self.main_exit = Some(e.status());
            }
            self.begin_stop(None);
        } else if critical && self.stopping.is_none() {
            log::error!("{name}: critical service ended: stopping everything");
            self.begin_stop(Some(
                exit.map(Exit::status).unwrap_or(crate::error::EXIT_FAILURE),
            ));
        }
        self.after_change();
    }

    fn on_proc_failed(&mut self, s: usize, reason: String) {
        let Some(svc) = self.svcs.get_mut(s) else {
            return;
        };
        log::error!("{}: FAILED: {reason}", svc.spec.name);
        let (main, critical) = (svc.spec.main, svc.spec.critical);
        if !matches!(svc.status, SvcStatus::Failed(_)) {
            svc.status = SvcStatus::Failed(reason);
        }
        if main {
            self.main_exit.get_or_insert(crate::error::EXIT_FAILURE);
            self.begin_stop(None);
        } else if critical {
            self.begin_stop(Some(crate::error::EXIT_FAILURE));
        }
        self.after_change();
    }

    /// After any change of state: continue a stop, start what can start, or
    /// notice that nothing is left to supervise.
    fn after_change(&mut self) {
        if self.stopping.is_some() {
            self.stop_next_group();
        } else {
            self.pump_starts();
            self.check_all_done();
        }
    }

    fn check_all_done(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let waiting = self
            .svcs
            .iter()
            .filter(|s| s.status != SvcStatus::Retired || s.live())
            .any(|s| {
                s.live()
                    || s.probe.is_some()
                    || s.status == SvcStatus::Manual
                    || (s.status == SvcStatus::Pending)
                    || s.procs
                        .iter()
                        .any(|p| matches!(p.state, State::Backoff { .. }))
            });
        if !waiting {
            let failed = self
                .svcs
                .iter()
                .any(|s| matches!(s.status, SvcStatus::Failed(_)));
            if self.svcs.iter().all(|s| s.status == SvcStatus::Retired) {
                log::info!("nothing to supervise");
            } else {
                log::info!("every service has ended");
            }
            self.begin_stop(Some(if failed {
                crate::error::EXIT_FAILURE
            } else {
                crate::error::EXIT_OK
            }));
        }
    }

    // ----- starting -----------------------------------------------------

    /// Start every pending service whose dependencies are up, in plan order.
    fn pump_starts(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        if let Some(until) = self.warmup_until {
            if until > Instant::now() {
                return;
            }
            self.warmup_until = None;
        }
        for k in 0..self.plan.len() {
            let Some(&s) = self.plan.get(k) else { break };
            let Some(svc) = self.svcs.get(s) else {
                continue;
            };
            if svc.status != SvcStatus::Pending {
                continue;
            }
            let failed_dep =
                svc.deps
                    .iter()
                    .find_map(|&d| match self.svcs.get(d).map(|x| &x.status) {
                        Some(SvcStatus::Failed(_)) => Some(self.name(d).to_string()),
                        _ => None,
                    });
            if let Some(dep) = failed_dep {
                self.on_proc_failed(s, format!("not started: dependency {dep} failed"));
                return; // on_proc_failed re-entered pump_starts
            }
            if !svc
                .deps
                .iter()
                .all(|&d| self.svcs.get(d).is_some_and(Svc::is_up))
            {
                continue;
            }
            // A service replaced by a reload starts once its old self is down.
            let name = &svc.spec.name;
            if self
                .svcs
                .iter()
                .any(|o| o.status == SvcStatus::Retired && o.live() && &o.spec.name == name)
            {
                continue;
            }
            let warmup = svc.spec.warmup_delay;
            self.start_service(s);
            if self.stopping.is_some() {
                return;
            }
            if !warmup.is_zero() {
                let until = Instant::now() + warmup;
                self.warmup_until = Some(until);
                self.add_timer(until, Timer::Warmup);
                return;
            }
        }
    }

    fn start_service(&mut self, s: usize) {
        let Some(svc) = self.svcs.get_mut(s) else {
            return;
        };
        svc.status = SvcStatus::Started;
        let n = (svc.spec.numprocesses as usize).min(svc.procs.len());
        let has_ready = svc.spec.ready.clone();
        for i in 0..n {
            self.proc_event(s, i, Event::Start);
        }
        if let Some(ready) = has_ready {
            if let Some(svc) = self.svcs.get_mut(s) {
                if svc.status == SvcStatus::Started {
                    svc.ready = false;
                    svc.ready_deadline = Some(Instant::now() + ready.timeout);
                    self.ready_poll(s);
                }
            }
        }
    }

    // ----- readiness ----------------------------------------------------

    fn ready_poll(&mut self, s: usize) {
        let Some(svc) = self.svcs.get(s) else { return };
        if svc.ready
            || svc.status != SvcStatus::Started
            || svc.probe.is_some()
            || self.stopping.is_some()
        {
            return;
        }
        let Some(ready) = svc.spec.ready.clone() else {
            return;
        };
        let ok = match &ready.check {
            ReadyCheck::Tcp(addr) => tcp_ready(addr),
            ReadyCheck::File(p) => p.exists(),
            ReadyCheck::Cmd(argv) => {
                let env = spawn::mc_env(&self.cfg, &svc.spec.name);
                let res = spawn::spawn(spawn::SpawnOpts {
                    argv,
                    env,
                    copy_env: true,
                    working_dir: svc.spec.working_dir.as_deref(),
                    creds: None,
                    rlimits: &[],
                    stdout: spawn::Out::Null,
                    stderr: spawn::Out::Null,
                    foreground: false,
                    stdin_null: true,
                });
                match res {
                    Ok(pid) => {
                        self.pids.insert(pid, Owner::Probe(s));
                        if let Some(svc) = self.svcs.get_mut(s) {
                            svc.probe = Some(pid);
                        }
                        return; // the verdict comes when the probe exits
                    }
                    Err(e) => {
                        log::debug!("{}: readiness command failed to start: {e}", self.name(s));
                        false
                    }
                }
            }
        };
        self.ready_verdict(s, ok, ready.interval);
    }

    fn on_probe_exit(&mut self, s: usize, exit: Exit) {
        let interval = match self.svcs.get_mut(s) {
            Some(svc) => {
                svc.probe = None;
                svc.spec
                    .ready
                    .as_ref()
                    .map(|r| r.interval)
                    .unwrap_or_default()
            }
            None => return,
        };
        if self.stopping.is_some() {
            return;
        }
        self.ready_verdict(s, exit == Exit::Code(0), interval);
    }

    fn ready_verdict(&mut self, s: usize, ok: bool, interval: Duration) {
        let now = Instant::now();
        let Some(svc) = self.svcs.get_mut(s) else {
            return;
        };
        if ok {
            svc.ready = true;
            log::info!("{}: ready", svc.spec.name);
            self.after_change();
        } else if svc.ready_deadline.is_some_and(|d| now >= d) {
            let timeout = svc
                .spec
                .ready
                .as_ref()
                .map(|r| r.timeout)
                .unwrap_or_default();
            let reason = format!("not ready after {}", fmt_duration(timeout));
            for i in 0..svc.procs.len() {
                self.proc_event(s, i, Event::Stop);
            }
            self.on_proc_failed(s, reason);
        } else {
            self.add_timer(now + interval, Timer::ReadyPoll(s));
        }
    }

    // ----- control ------------------------------------------------------

    fn serve_conn(&mut self, i: usize) {
        let incoming = match &mut self.ctl {
            Some(ctl) => ctl.read(i),
            None => return,
        };
        for msg in incoming {
            let (reply, close) = match msg {
                crate::ctl::server::Incoming::Request(req) => (self.handle(&req), false),
                crate::ctl::server::Incoming::Bad(e) => (crate::ctl::proto::error_reply(&e), false),
                crate::ctl::server::Incoming::TooLong => (
                    crate::ctl::proto::error_reply("request line too long"),
                    true,
                ),
            };
            if let Some(ctl) = &mut self.ctl {
                ctl.reply(i, &reply);
                if close {
                    ctl.close(i);
                }
            }
        }
    }

    fn handle(&mut self, req: &crate::ctl::proto::Request) -> serde_json::Value {
        use serde_json::json;
        let name = req.name.as_deref().unwrap_or("");
        let target = if req.name.is_some() {
            match self.find(name) {
                Some(s) => Some(s),
                None => return crate::ctl::proto::error_reply(&format!("no such service: {name}")),
            }
        } else {
            None
        };
        let stopping = self.stopping.is_some();
        match (req.cmd.as_str(), target) {
            ("status", _) => json!({"ok": true, "services": self.status_json()}),
            ("health", _) => {
                let bad: Vec<String> = self
                    .svcs
                    .iter()
                    .filter(|s| s.spec.autostart && s.status != SvcStatus::Retired && !s.is_up())
                    .map(|s| s.spec.name.clone())
                    .collect();
                if bad.is_empty() && !stopping {
                    json!({"ok": true, "message": "healthy"})
                } else if stopping {
                    crate::ctl::proto::error_reply("stopping")
                } else {
                    crate::ctl::proto::error_reply(&format!(
                        "not running or not ready: {}",
                        bad.join(", ")
                    ))
                }
            }
            ("quit", _) => {
                log::info!("quit requested on the control socket: stopping");
                self.begin_stop(None);
                json!({"ok": true, "message": "stopping"})
            }
            ("reload", _) if self.reloader.is_none() => {
                crate::ctl::proto::error_reply("no config file to reload")
            }
            ("reload", _) => self.reload(),
            (_, _) if stopping => crate::ctl::proto::error_reply("the launcher is stopping"),
            ("start", Some(s)) => {
                if self.svcs.get(s).is_some_and(Svc::live) {
                    return crate::ctl::proto::error_reply(&format!("{name} is already running"));
                }
                self.start_service(s);
                json!({"ok": true, "message": format!("{name} started")})
            }
            ("stop", Some(s)) => {
                if let Some(svc) = self.svcs.get_mut(s) {
                    svc.status = SvcStatus::Manual;
                }
                self.stop_service(s);
                json!({"ok": true, "message": format!("{name} stopping")})
            }
            ("restart", Some(s)) => {
                let n = self
                    .svcs
                    .get(s)
                    .map(|x| x.spec.numprocesses as usize)
                    .unwrap_or(0);
                let live: Vec<usize> = (0..n)
                    .filter(|&i| {
                        self.svcs
                            .get(s)
                            .and_then(|x| x.procs.get(i))
                            .is_some_and(Proc::is_live)
                    })
                    .collect();
                if live.is_empty() {
                    self.start_service(s);
                } else {
                    for i in live {
                        self.restart_after_stop.push((s, i));
                        self.proc_event(s, i, Event::Stop);
                    }
                }
                json!({"ok": true, "message": format!("{name} restarting")})
            }
            ("signal", Some(s)) => {
                let Some(sig) = req.signal.as_deref().and_then(crate::signals::parse_signal) else {
                    return crate::ctl::proto::error_reply(&format!(
                        "unknown signal: {}",
                        req.signal.as_deref().unwrap_or("")
                    ));
                };
                let pids: Vec<i32> = self
                    .svcs
                    .get(s)
                    .map(|x| x.procs.iter().filter_map(Proc::pid).collect())
                    .unwrap_or_default();
                for pid in &pids {
                    spawn::signal_group(*pid, sig);
                }
                json!({"ok": true, "message": format!("{} sent to {} process(es) of {name}", crate::signals::short_name(sig), pids.len())})
            }
            ("incr", Some(s)) => {
                let Some(svc) = self.svcs.get_mut(s) else {
                    return crate::ctl::proto::error_reply("gone");
                };
                let i = svc.spec.numprocesses as usize;
                svc.spec.numprocesses += 1;
                if svc.procs.len() <= i {
                    let gen = svc.procs.iter().map(|p| p.generation).max().unwrap_or(0) + 1;
                    svc.procs.push(Proc {
                        generation: gen,
                        ..Proc::new()
                    });
                }
                let n = svc.spec.numprocesses;
                if svc.status == SvcStatus::Started {
                    self.proc_event(s, i, Event::Start);
                }
                json!({"ok": true, "numprocesses": n, "message": format!("{name}: {n} process(es)")})
            }
            ("decr", Some(s)) => {
                let Some(svc) = self.svcs.get_mut(s) else {
                    return crate::ctl::proto::error_reply("gone");
                };
                if svc.spec.numprocesses <= 1 {
                    return crate::ctl::proto::error_reply(&format!(
                        "{name} runs one process: use stop"
                    ));
                }
                svc.spec.numprocesses -= 1;
                let n = svc.spec.numprocesses;
                self.proc_event(s, n as usize, Event::Stop);
                json!({"ok": true, "numprocesses": n, "message": format!("{name}: {n} process(es)")})
            }
            (cmd, _) => crate::ctl::proto::error_reply(&format!("cannot {cmd} now")),
        }
    }

    fn stop_service(&mut self, s: usize) {
        let n = self.svcs.get(s).map(|x| x.procs.len()).unwrap_or(0);
        for i in 0..n {
            self.proc_event(s, i, Event::Stop);
        }
    }

    fn status_json(&self) -> Vec<serde_json::Value> {
        use serde_json::json;
        let now = Instant::now();
        self.svcs
            .iter()
            .filter(|s| s.status != SvcStatus::Retired)
            .map(|s| {
                let procs: Vec<&Proc> = s.active_procs().map(|(_, p)| p).collect();
                let pids: Vec<i32> = procs.iter().filter_map(|p| p.pid()).collect();
                let since = procs
                    .iter()
                    .filter_map(|p| match p.state {
                        State::Running { since, .. } => Some(since),
                        _ => None,
                    })
                    .min();
                let state = match &s.status {
                    SvcStatus::Failed(_) => "failed",
                    _ if procs.iter().any(|p| matches!(p.state, State::Stopping { .. })) => "stopping",
                    _ if !pids.is_empty() && !s.ready => "starting",
                    _ if !pids.is_empty() => "running",
                    _ if procs.iter().any(|p| matches!(p.state, State::Backoff { .. })) => "backoff",
                    SvcStatus::Pending => "pending",
                    SvcStatus::Manual | SvcStatus::Retired => "stopped",
                    SvcStatus::Started => "ended",
                };
                json!({
                    "name": s.spec.name,
                    "state": state,
                    "pids": pids,
                    "uptime_s": since.map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    "restarts": procs.iter().map(|p| p.restarts).sum::<u32>(),
                    "last_exit": procs.iter().filter_map(|p| p.last_exit).next_back().map(|e| e.to_string()),
                    "numprocesses": s.spec.numprocesses,
                    "reason": match &s.status { SvcStatus::Failed(r) => Some(r.clone()), _ => None },
                })
            })
            .collect()
    }

    /// Re-read the config; if valid, stop removed services, restart changed
    /// ones, start new ones, and leave the others running.
    fn reload(&mut self) -> serde_json::Value {
        use serde_json::json;
        let Some(reloader) = &mut self.reloader else {
            return crate::ctl::proto::error_reply("no config file to reload");
        };
        let (cfg, services) = match reloader() {
            Ok(x) => x,
            Err(diags) => {
                let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
                for t in &text {
                    log::error!("reload refused: {t}");
                }
                return json!({"ok": false, "error": format!("invalid config, nothing changed:\n{}", text.join("\n"))});
            }
        };
        let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        let new_names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        for s in 0..self.svcs.len() {
            let Some(svc) = self.svcs.get(s) else {
                continue;
            };
            if svc.spec.main
                || svc.status == SvcStatus::Retired
                || new_names.contains(&svc.spec.name.as_str())
            {
                continue;
            }
            removed.push(svc.spec.name.clone());
            self.retire(s);
        }
        for spec in services {
            match self.find(&spec.name) {
                Some(s)
                    if self
                        .svcs
                        .get(s)
                        .is_some_and(|x| same_definition(&x.spec, &spec)) => {}
                Some(s) => {
                    changed.push(spec.name.clone());
                    self.retire(s);
                    self.add_slot(spec);
                }
                None => {
                    added.push(spec.name.clone());
                    self.add_slot(spec);
                }
            }
        }
        self.cfg = cfg;
        self.replan();
        self.after_change();
        let msg = format!(
            "reloaded: {} added, {} removed, {} changed",
            if added.is_empty() {
                "none".into()
            } else {
                added.join(" ")
            },
            if removed.is_empty() {
                "none".into()
            } else {
                removed.join(" ")
            },
            if changed.is_empty() {
                "none".into()
            } else {
                changed.join(" ")
            }
        );
        json!({"ok": true, "message": msg, "added": added, "removed": removed, "changed": changed})
    }

    fn retire(&mut self, s: usize) {
        if let Some(svc) = self.svcs.get_mut(s) {
            svc.status = SvcStatus::Retired;
        }
        self.stop_service(s);
        self.restart_after_stop.retain(|&(x, _)| x != s);
    }

    /// Put a new service in a free slot (one left by a retired service that
    /// has fully stopped) or a new one.
    fn add_slot(&mut self, spec: Service) {
        match self.svcs.iter().position(Svc::reusable) {
            Some(s) => {
                let gen = self
                    .svcs
                    .get(s)
                    .map(|x| x.procs.iter().map(|p| p.generation).max().unwrap_or(0) + 1)
                    .unwrap_or(0);
                if let Some(slot) = self.svcs.get_mut(s) {
                    *slot = new_slot(spec, gen);
                }
            }
            None => self.svcs.push(new_slot(spec, 0)),
        }
    }

    // ----- stopping -----------------------------------------------------

    /// Start the graceful stop. `code` decides the exit status unless an
    /// earlier cause already did.
    fn begin_stop(&mut self, code: Option<i32>) {
        if let Some(c) = code {
            self.exit_code.get_or_insert(c);
        }
        if self.stopping.is_some() {
            return;
        }
        let deadline = Instant::now() + self.cfg.shutdown.timeout;
        self.stopping = Some(Stopping {
            deadline,
            forced: false,
        });
        self.add_timer(deadline, Timer::Deadline);
        // Closing an inotify instance waits for an RCU grace period (~10 ms):
        // let a thread do it now, while the services stop, rather than at
        // exit, where it would delay the launcher's own end.
        if let Some(keys) = self.keys.take() {
            let _ = std::thread::Builder::new()
                .name("close-watch".into())
                .spawn(move || drop(keys));
        }
        // Nothing waiting for a restart comes back.
        for s in 0..self.svcs.len() {
            let n = self.svcs.get(s).map(|x| x.procs.len()).unwrap_or(0);
            for i in 0..n {
                let backoff = self
                    .svcs
                    .get(s)
                    .and_then(|x| x.procs.get(i))
                    .is_some_and(|p| matches!(p.state, State::Backoff { .. }));
                if backoff {
                    self.proc_event(s, i, Event::Stop);
                }
            }
        }
        self.stop_next_group();
    }

    /// Stop the next group in reverse start order; a group is the services
    /// of one dependency level and priority, stopped in parallel.
    fn stop_next_group(&mut self) {
        let Some(key) = self
            .svcs
            .iter()
            .filter(|s| s.live())
            .map(Svc::stop_key)
            .max()
        else {
            return;
        };
        let group: Vec<usize> = (0..self.svcs.len())
            .filter(|&s| {
                self.svcs
                    .get(s)
                    .is_some_and(|x| x.live() && x.stop_key() == key)
            })
            .collect();
        for s in group {
            let n = self.svcs.get(s).map(|x| x.procs.len()).unwrap_or(0);
            for i in 0..n {
                self.proc_event(s, i, Event::Stop);
            }
        }
    }

    fn kill_all(&mut self) {
        if let Some(st) = &mut self.stopping {
            st.forced = true;
        }
        for s in 0..self.svcs.len() {
            let n = self.svcs.get(s).map(|x| x.procs.len()).unwrap_or(0);
            for i in 0..n {
                let live = self
                    .svcs
                    .get(s)
                    .and_then(|x| x.procs.get(i))
                    .is_some_and(Proc::is_live);
                if live {
                    self.proc_event(s, i, Event::Kill);
                }
            }
        }
        for probe in self.svcs.iter().filter_map(|s| s.probe) {
            spawn::signal_group(probe, Signal::SIGKILL);
        }
    }

    /// Everything has stopped: make sure nothing outlives us, collect the
    /// last output, print the summary, and return the exit status.
    fn finish(&mut self) -> i32 {
        if self.is_pid1 {
            // As PID 1, whatever is left in the container dies with us.
            let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
        } else {
            // As a subreaper: kill what is left; killing a child re-parents
            // its own children to us, so repeat until none is left.
            let me = std::process::id() as i32;
            for _ in 0..100 {
                let left = children_of(me);
                if left.is_empty() {
                    break;
                }
                for pid in left {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                while let Ok(st) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                    if st == WaitStatus::StillAlive {
                        std::thread::sleep(Duration::from_millis(1));
                        break;
                    }
                }
            }
        }
        while let Ok(_) | Err(Errno::EINTR) = waitpid(None::<Pid>, None) {}
        for i in 0..self.readers.len() {
            self.drain_reader(i);
        }
        for s in self.svcs.iter().filter(|s| s.status != SvcStatus::Retired) {
            log::info!("summary: {}", summary(s));
        }
        self.exit_code
            .or(self.main_exit)
            .unwrap_or(crate::error::EXIT_OK)
    }
}

/// A slot for a new service; `gen_base` keeps generations rising in a
/// reused slot, so a timer of its previous occupant can never match.
fn new_slot(spec: Service, gen_base: u64) -> Svc {
    let procs = (0..spec.numprocesses.max(1))
        .map(|_| Proc {
            generation: gen_base,
            ..Proc::new()
        })
        .collect();
    Svc {
        policy: Policy::from_service(&spec),
        status: if spec.autostart {
            SvcStatus::Pending
        } else {
            SvcStatus::Manual
        },
        ready: spec.ready.is_none(),
        ready_deadline: None,
        probe: None,
        level: 0,
        deps: Vec::new(),
        procs,
        spec,
    }
}

/// Two definitions of a service are the same if they differ only in where
/// they were written.
fn same_definition(a: &Service, b: &Service) -> bool {
    let mut b = b.clone();
    b.origin = a.origin.clone();
    *a == b
}

/// Dependency level of each service (cycles were refused by validation; a
/// leftover one is cut rather than looped on).
fn compute_levels(svcs: &mut [Svc]) {
    let n = svcs.len();
    for _ in 0..n {
        let mut changed = false;
        for s in 0..n {
            let want = svcs
                .get(s)
                .map(|x| {
                    x.deps
                        .iter()
                        .filter_map(|&d| svcs.get(d).map(|y| y.level + 1))
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0)
                .min(n as u32);
            if let Some(x) = svcs.get_mut(s) {
                if x.level != want {
                    x.level = want;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
}

fn tcp_ready(addr: &str) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let Ok(addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
}

/// One line: how a service ended and how long its stop took.
fn summary(s: &Svc) -> String {
    let mut parts: Vec<String> = Vec::new();
    for p in &s.procs {
        let text = match &p.state {
            State::Ended {
                exit,
                stop_took: Some(took),
                killed,
            } => {
                let how = exit.map(|e| e.to_string()).unwrap_or_default();
                if *killed {
                    format!(
                        "stopped in {} ({how}, SIGKILL after grace)",
                        fmt_duration(*took)
                    )
                } else {
                    format!("stopped in {} ({how})", fmt_duration(*took))
                }
            }
            State::Ended {
                exit: Some(e),
                stop_took: None,
                ..
            } => format!("had ended ({e})"),
            State::Ended { exit: None, .. } => "stopped while waiting to restart".to_string(),
            State::Failed { reason } => format!("FAILED ({reason})"),
            State::Idle => "not started".to_string(),
            other => format!("{other:?}"),
        };
        parts.push(text);
    }
    let restarts: u32 = s.procs.iter().map(|p| p.restarts).sum();
    let mut line = format!("{}: {}", s.spec.name, parts.join("; "));
    if restarts > 0 {
        line.push_str(&format!(", {restarts} restarts"));
    }
    line
}
