//! The thin shell around the core: one event loop, driven by signals,
//! child exits, output pipes, probe sockets, the control socket and the
//! key-directory watch, with no periodic wake-up.
//!
//! Each round: feed the queued inputs to the core one by one and carry out
//! the effects it returns; an effect whose outcome is an input (a spawn, a
//! probe verdict, a reload) queues that input — it is handled after, never
//! from inside the core. Then poll until something happens or the next
//! deadline, and turn what happened into inputs. Nothing here blocks: the
//! output goes to the writer thread, probes and control replies are
//! non-blocking, host names resolve on a helper thread.

use super::core::{label, Core, Effect, Input, Now, Prepared, ProbeId, ReloadSet};
use crate::config::model::{Config, ReadyCheck, Service, Stream};
use crate::ctl::http::{Ask, HttpServer};
use crate::ctl::server::{Incoming, Server};
use crate::error::Outcome;
use crate::proc::exit::Exit;
use crate::proc::output::{self, Dest, Reader};
use crate::proc::probe::{Probes, Started, Verdict};
use crate::proc::record::Head;
use crate::proc::watch::{DirWatch, FileWatch, PathsWatch};
use crate::proc::{reap, spawn};
use crate::signals::SignalSource;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod io;

/// Reloads the configuration (SIGHUP, `ctl reload`): the new config and
/// what changes, or every error found, one per line.
pub type Reloader = Box<dyn FnMut() -> Result<(Config, ReloadSet), String>>;

/// Applies the key directories again after a change (`ssh.watch`) and
/// says what sshd should now be (`None`: none).
pub type KeysChanged = Box<dyn FnMut(&Config) -> Option<Service>>;

/// A live reconfigure's inline part (README "Live reconfigure"): validate
/// the inputs, install the pillar, render the templates, and say which
/// process steps the core runs next. `retry`: the last one failed, its
/// steps run again. Never runs a child itself: the core does.
pub type Reconfigurer = Box<dyn FnMut(bool) -> ReconfigureRun>;

/// What a `Reconfigurer` did, and what the watch follows from now on.
pub struct ReconfigureRun {
    pub result: Prepared,
    /// The files whose change triggers the next one (`reconfigure.watch`).
    pub watch: Vec<std::path::PathBuf>,
}

/// Quiet time after a change in the key directories before they are read.
const KEYS_DEBOUNCE: Duration = Duration::from_millis(300);
/// Quiet time after a change of the live reconfigure's inputs (README
/// "Live reconfigure"): a kubelet update or an editor's save is a burst.
const RECONFIGURE_DEBOUNCE: Duration = Duration::from_millis(500);
/// Inputs handled between two looks at the signal fd, so that a stop
/// request is read soon even during a start of thousands of processes.
const SIGNAL_CHECK_EVERY: usize = 64;

/// Inputs handled in one round of the loop before it polls again (without
/// waiting when inputs are left).
const INPUTS_PER_ROUND: usize = 256;

pub(super) struct Shell<'a> {
    pub core: Core,
    pub cfg: Config,
    pub signals: &'a mut SignalSource,
    pub ctl: Option<Server>,
    /// `GET /metrics` (`metrics.listen`).
    pub http: Option<HttpServer>,
    pub readers: Vec<Option<Reader>>,
    pub probes: Probes,
    pub keys: Option<DirWatch>,
    pub keys_due: Option<Instant>,
    pub reloader: Option<Reloader>,
    pub on_keys_changed: Option<KeysChanged>,
    pub stdin_tty: bool,
    pub is_pid1: bool,
    pub inputs: VecDeque<Input>,
    /// How the launcher ends (`Effect::Exit`): the loop's end.
    pub exit: Option<Outcome>,
    /// The service of each probe in flight, for the log.
    pub probe_names: std::collections::HashMap<u64, String>,
    /// Running one prepare step rather than the services.
    pub step_run: bool,
    /// How that step ended (`Effect::StepEnded`).
    pub step_end: Option<crate::proc::JobEnd>,
    /// The last stderr lines of each service, for the termination report.
    pub tails: std::collections::HashMap<String, output::SharedTail>,
    /// The env files and secrets each service's last process started
    /// with: its helpers (`cmd` probes, `pre_stop`) get the same, never a
    /// read of their own (README "Env files and secrets").
    pub env_files: std::collections::HashMap<String, std::rc::Rc<crate::proc::envfile::FileEnv>>,
    /// The rate limit of each service's output (`log.rate_limit`).
    pub limiters: std::collections::HashMap<String, output::SharedLimiter>,
    /// The service each process group belongs to (leader pid → name).
    pub groups: std::collections::HashMap<i32, String>,
    /// Where `ready: {notify: true}` services send `READY=1`: one socket
    /// per such service (made at its first spawn), so a message belongs to
    /// the service whose socket it came in on — its sender may be gone by
    /// the time it is read (a `python -c` that notifies and exits) — with
    /// the uid its processes run as.
    pub notify: Vec<(String, crate::proc::notify::NotifySocket, u32)>,
    /// Makes the sockets' names unguessable.
    pub notify_seed: u64,
    /// Our own supervisor's `NOTIFY_SOCKET`, sent to without blocking.
    pub notify_target: Option<crate::proc::notify::Outbox>,
    /// The cgroup whose `memory.events` tells OOM kills, and the count
    /// seen so far.
    pub cgroup: Option<crate::proc::cgroup::Layout>,
    pub oom_seen: u64,
    /// A stop signal was read and queued (spawns are skipped from then on).
    pub stop_queued: bool,
    /// Service processes the launcher itself sent SIGKILL (until reaped).
    pub killed: std::collections::HashSet<i32>,
    pub reconfigurer: Option<Reconfigurer>,
    pub reconf_watch: Option<FileWatch>,
    pub reconf_due: Option<Instant>,
    /// The services' `watch` paths (README "File watches").
    pub svc_watch: Option<PathsWatch>,
}

impl<'a> Shell<'a> {
    /// A shell for `core` with none of a run's own parts (listeners,
    /// watches, reload, sd_notify, cgroup): `run` adds them, a prepare
    /// step runs without.
    pub fn new(core: Core, cfg: Config, signals: &'a mut SignalSource, probes: Probes) -> Self {
        Shell {
            core,
            cfg,
            signals,
            ctl: None,
            http: None,
            readers: Vec::new(),
            probes,
            keys: None,
            keys_due: None,
            reloader: None,
            on_keys_changed: None,
            stdin_tty: false,
            is_pid1: false,
            inputs: VecDeque::new(),
            exit: None,
            probe_names: Default::default(),
            step_run: false,
            step_end: None,
            tails: Default::default(),
            env_files: Default::default(),
            limiters: Default::default(),
            groups: Default::default(),
            notify: Vec::new(),
            notify_seed: 1,
            notify_target: None,
            cgroup: None,
            oom_seen: 0,
            stop_queued: false,
            killed: Default::default(),
            reconfigurer: None,
            reconf_watch: None,
            reconf_due: None,
            svc_watch: None,
        }
    }
}

/// The services' watch, or none (said) when it cannot be had.
pub(super) fn new_watch(groups: Vec<(String, Vec<std::path::PathBuf>)>) -> Option<PathsWatch> {
    PathsWatch::new(groups)
        .map_err(|e| log::warn!("watch: cannot watch the services' paths: {e}"))
        .ok()
}

/// What each service's `watch` lists, by service name.
/// `ctl logs` on connection `conn`: an acknowledgement, then the lines (a
/// reader that does not follow is closed once it has read them); or what
/// to say instead.
fn serve_logs(ctl: &mut Server, conn: u64, asked: output::Asked<'_>) {
    use crate::ctl::proto::Reply;
    match output::answer(asked) {
        output::Answer::Read(reader) => {
            ctl.reply(
                conn,
                &Reply {
                    ok: true,
                    ..Reply::default()
                },
            );
            ctl.follow(conn, reader);
        }
        output::Answer::Say(text) => {
            ctl.reply(conn, &Reply::ok(text));
            ctl.close_after_replies(conn);
        }
        output::Answer::Refuse(text) => ctl.reply(conn, &Reply::error(text)),
    }
}

pub(super) fn watch_groups(cfg: &Config) -> Vec<(String, Vec<std::path::PathBuf>)> {
    cfg.services
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.watch.as_ref()?.paths.clone())))
        .collect()
}

/// After a job's end, how long its output may still come (a descendant in
/// another process group may hold the pipe open).
const JOB_OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// At most this many wake-ups' worth of output is read from one pipe
/// after every process has ended (a pipe holds at most 1 MiB: 2 do).
const FINAL_DRAINS: usize = 64;

/// What a slot of the poll set stands for.
#[derive(Clone, Copy)]
enum Src {
    Signals,
    Keys,
    Reconf,
    SvcWatch,
    Listener,
    Conn(u64),
    HttpListener,
    Http(u64),
    ProbeWake,
    Probe(u64),
    Reader(usize),
    /// The writer's queue has room again (readers held, see below).
    OutputRoom,
    Notify(usize),
}

/// A listening socket (polled for a connection to accept), then each of
/// its connections (`conn(id)`, polled for what it waits for).
fn push_listener(
    srcs: &mut Vec<(Src, RawFd, PollFlags)>,
    (src, fd): (Src, BorrowedFd<'_>),
    conns: Vec<(u64, BorrowedFd<'_>, PollFlags)>,
    conn: fn(u64) -> Src,
) {
    srcs.push((src, fd.as_raw_fd(), PollFlags::POLLIN));
    for (id, fd, ev) in conns {
        srcs.push((conn(id), fd.as_raw_fd(), ev));
    }
}

impl Shell<'_> {
    pub fn run(&mut self) -> Outcome {
        self.inputs.push_back(Input::Tick);
        let mut first = true;
        loop {
            self.drain_inputs();
            if std::mem::take(&mut first) && self.readers.iter().any(Option::is_some) {
                // The services run and their output is ours to write: now
                // is the time to start the writer, not on the exit path.
                // (Without captured output, the launcher's first line of
                // its own starts it; with none at all, there is no thread.)
                output::writer().start();
            }
            if let Some(outcome) = self.exit {
                if self.step_run {
                    self.finish_job();
                    return outcome;
                }
                return self.finish(outcome);
            }
            self.wait_and_gather();
        }
    }

    /// Whether a stop request came (handled, or read and queued): the
    /// spawns still to do are skipped. Looks at the signal fd before each
    /// spawn (one read), so a burst of thousands yields to SIGTERM between
    /// two spawns, not after all of them.
    fn stop_pending(&mut self) -> bool {
        if self.step_run {
            return false;
        }
        if self.stop_queued || self.core.is_stopping() {
            return true;
        }
        let (mut signals, exits): (Vec<Input>, Vec<Input>) = self
            .read_signals()
            .into_iter()
            .partition(|i| matches!(i, Input::Signal(_)));
        self.stop_queued = signals.iter().any(|i| {
            matches!(
                i,
                Input::Signal(Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)
            )
        });
        // Signals first; exits after the `Spawned` already queued (a
        // process may end before its start is told).
        while let Some(i) = signals.pop() {
            self.inputs.push_front(i);
        }
        self.inputs.extend(exits);
        self.stop_queued
    }

    fn drain_inputs(&mut self) {
        let mut handled = 0usize;
        while let Some(input) = self.inputs.pop_front() {
            let now = Instant::now();
            let clocks = Now {
                mono: now,
                unix: output::unix_now(),
            };
            for e in self.core.handle(input, clocks) {
                self.apply(e, now);
            }
            handled += 1;
            if handled >= INPUTS_PER_ROUND {
                // Let the loop poll (ctl, output, exits) before going on:
                // a burst of spawns keeps the queue full for long.
                return;
            }
            if handled.is_multiple_of(SIGNAL_CHECK_EVERY) {
                // Stop requests and exits go first.
                let mut urgent = self.read_signals();
                while let Some(i) = urgent.pop() {
                    self.inputs.push_front(i);
                }
            }
        }
    }

    // ----- effects -----------------------------------------------------------

    fn apply(&mut self, e: Effect, now: Instant) {
        match e {
            Effect::Spawn { proc, spec, index } => {
                // The main command is always started (its status is the
                // launcher's: a TERM right after the start still ends it
                // with 143); the rest of a burst yields to a stop.
                if !spec.main && self.stop_pending() {
                    self.inputs.push_back(Input::NotSpawned { proc });
                    return;
                }
                let input = match self.spawn_service(&spec, index, None) {
                    Ok(pid) => Input::Spawned { proc, pid },
                    Err(e) => Input::SpawnFailed {
                        proc,
                        reason: e.reason,
                        outcome: e.outcome,
                        retry: e.retry,
                    },
                };
                self.inputs.push_back(input);
            }
            Effect::Signal { pid, signal, group } => {
                if signal == Signal::SIGKILL && self.groups.contains_key(&pid) {
                    // Our own SIGKILL is never the kernel's OOM kill; and
                    // what the counter says now is old news for it.
                    self.killed.insert(pid);
                    self.refresh_oom_seen();
                }
                if group {
                    spawn::signal_group(pid, signal);
                } else {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
                }
            }
            Effect::Probe {
                probe,
                service,
                check,
                timeout,
                spec,
            } => {
                self.probe_names.insert(probe.0, service.clone());
                if let Some(v) = self.start_probe(probe, &spec, &check, now + timeout) {
                    self.probe_verdict(probe, v);
                }
            }
            Effect::CancelProbe(p) => {
                self.probe_names.remove(&p.0);
                self.probes.cancel(p.0);
            }
            Effect::Reply { conn, mut reply } => {
                // `ctl status NAME`: the stderr tail is the shell's.
                for row in reply.services.iter_mut().flatten() {
                    if let (Some(d), Some(t)) = (&mut row.detail, self.tails.get(&row.name)) {
                        d.stderr_tail = t.borrow().lines();
                    }
                }
                if let Some(ctl) = &mut self.ctl {
                    ctl.reply(conn, &reply);
                }
            }
            Effect::ReadLogs {
                conn,
                service,
                streams,
                lines,
                follow,
            } => {
                if let Some(ctl) = &mut self.ctl {
                    let asked = output::Asked {
                        name: service.as_deref(),
                        streams: streams.as_ref().map(|(o, e)| (o, e)),
                        lines,
                        follow,
                    };
                    serve_logs(ctl, conn, asked);
                }
            }
            Effect::Reload { conn } => {
                let result = match &mut self.reloader {
                    None => Err("no config file to reload".to_string()),
                    Some(reload) => reload().map(|(cfg, set)| {
                        self.cfg = cfg;
                        let groups = watch_groups(&self.cfg);
                        match &mut self.svc_watch {
                            Some(w) => w.set_groups(groups),
                            None if !groups.is_empty() => self.svc_watch = new_watch(groups),
                            None => {}
                        }
                        set
                    }),
                };
                self.inputs.push_back(Input::Reloaded { conn, result });
            }
            Effect::Reconfigure { conn, retry } => {
                let result = match &mut self.reconfigurer {
                    None => Prepared::Failed("no live reconfigure".into()),
                    Some(f) => {
                        let run = f(retry);
                        if let Some(w) = &mut self.reconf_watch {
                            w.set_files(&run.watch);
                        }
                        run.result
                    }
                };
                self.inputs.push_back(Input::Prepared { conn, result });
            }
            Effect::StopBegan => {
                self.keys_due = None;
                self.reconf_due = None;
                // No more changes are applied (dropping a watch is free:
                // see proc::watch).
                self.keys = None;
                self.reconf_watch = None;
                self.svc_watch = None;
            }
            Effect::StepEnded { name: _, end } => self.step_end = Some(end),
            Effect::Exit(outcome) => self.exit = Some(outcome),
            Effect::Hook {
                probe,
                spec,
                argv,
                timeout,
            } => match self.spawn_helper(&spec, argv, "pre_stop", Stream::Prefix) {
                Ok(pid) => self.probes.start_cmd(probe.0, pid, now + timeout),
                Err(e) => {
                    log::warn!("{}: pre_stop: {}", spec.name, e.reason);
                    self.inputs.push_back(Input::ProbeDone { probe, ok: false });
                }
            },
            Effect::Notify(message) => {
                if let Some(out) = &mut self.notify_target {
                    out.send(message, now);
                }
            }
        }
    }

    fn wait_and_gather(&mut self) {
        let now = Instant::now();
        let hold = if self.readers.iter().any(Option::is_some) {
            output::writer().hold(now)
        } else {
            None
        };
        let deadline = [
            self.core.next_deadline(),
            self.probes.next_deadline(),
            self.keys_due,
            self.reconf_due,
            self.ctl.as_ref().and_then(Server::next_deadline),
            self.http.as_ref().and_then(HttpServer::next_deadline),
            self.notify_target
                .as_ref()
                .and_then(crate::proc::notify::Outbox::next_deadline),
            self.limiters
                .values()
                .filter_map(|l| l.borrow().due())
                .min(),
            hold,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = if self.inputs.is_empty() {
            crate::proc::poll_timeout(deadline, now)
        } else {
            // Inputs left from a long round: look, do not wait.
            nix::poll::PollTimeout::ZERO
        };
        let mut srcs: Vec<(Src, RawFd, PollFlags)> = Vec::with_capacity(8 + self.readers.len());
        srcs.push((
            Src::Signals,
            self.signals.fd().as_raw_fd(),
            PollFlags::POLLIN,
        ));
        if let Some(k) = &self.keys {
            srcs.push((Src::Keys, k.fd().as_raw_fd(), PollFlags::POLLIN));
        }
        if let Some(w) = &self.reconf_watch {
            srcs.push((Src::Reconf, w.fd().as_raw_fd(), PollFlags::POLLIN));
        }
        if let Some(w) = &self.svc_watch {
            srcs.push((Src::SvcWatch, w.fd().as_raw_fd(), PollFlags::POLLIN));
        }
        if let Some(ctl) = &self.ctl {
            let listener = (Src::Listener, ctl.listener_fd());
            push_listener(&mut srcs, listener, ctl.poll_fds(), Src::Conn);
        }
        if let Some(h) = &self.http {
            let listener = (Src::HttpListener, h.listener_fd());
            push_listener(&mut srcs, listener, h.poll_fds(), Src::Http);
        }
        for (id, fd, ev) in self.probes.poll_fds() {
            let src = id.map_or(Src::ProbeWake, Src::Probe);
            srcs.push((src, fd.as_raw_fd(), ev));
        }
        match (hold, output::writer().room_fd()) {
            // The writer is behind: its services wait on their pipes until
            // it has caught up (or is found stuck at `hold`).
            (Some(_), Some(fd)) => srcs.push((Src::OutputRoom, fd.as_raw_fd(), PollFlags::POLLIN)),
            _ => {
                for (i, r) in self.readers.iter().enumerate() {
                    if let Some(r) = r {
                        srcs.push((Src::Reader(i), r.fd().as_raw_fd(), PollFlags::POLLIN));
                    }
                }
            }
        }
        for (i, (_, n, _)) in self.notify.iter().enumerate() {
            srcs.push((Src::Notify(i), n.fd().as_raw_fd(), PollFlags::POLLIN));
        }
        let revents: Vec<PollFlags> = {
            // SAFETY: every fd above belongs to an object of `self` that
            // lives, untouched, until poll returns.
            let mut fds: Vec<PollFd> = srcs
                .iter()
                .map(|(_, fd, ev)| PollFd::new(unsafe { BorrowedFd::borrow_raw(*fd) }, *ev))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => log::error!("poll failed: {e}"),
            }
            fds.iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect()
        };
        let now = Instant::now();
        let mut signals_ready = false;
        let mut output_ready = Vec::new();
        for ((src, _, _), ev) in srcs.iter().zip(revents) {
            if ev.is_empty() {
                continue;
            }
            match *src {
                Src::Signals => signals_ready = true,
                // Output last: see below.
                Src::Reader(i) => output_ready.push(i),
                Src::Keys => {
                    if self.keys.as_mut().is_some_and(DirWatch::changed) {
                        // Editors and `cp` make bursts of events: wait for quiet.
                        self.keys_due = Some(now + KEYS_DEBOUNCE);
                    }
                }
                Src::Reconf => {
                    if self.reconf_watch.as_mut().is_some_and(FileWatch::changed) {
                        self.reconf_due = Some(now + RECONFIGURE_DEBOUNCE);
                    }
                }
                Src::SvcWatch => {
                    let changed = self.svc_watch.as_mut().map(PathsWatch::changed);
                    for service in changed.unwrap_or_default() {
                        self.inputs.push_back(Input::PathsChanged { service });
                    }
                }
                Src::Listener => {
                    let fresh = match &mut self.ctl {
                        Some(ctl) => ctl.accept(now),
                        None => Vec::new(),
                    };
                    // The request usually came with the connection: read
                    // it now rather than a round later.
                    for id in fresh {
                        self.serve_conn(id, PollFlags::POLLIN, now);
                    }
                }
                Src::Conn(id) => self.serve_conn(id, ev, now),
                Src::HttpListener => {
                    if let Some(h) = &mut self.http {
                        h.accept(now);
                    }
                }
                Src::Http(id) => self.serve_http(id, ev),
                Src::ProbeWake => {
                    for (id, v) in self.probes.resolved() {
                        self.probe_verdict(ProbeId(id), v);
                    }
                }
                Src::Probe(id) => {
                    if let Some(v) = self.probes.ready(id) {
                        self.probe_verdict(ProbeId(id), v);
                    }
                }
                Src::OutputRoom => output::writer().take_room(),
                Src::Notify(i) => self.read_notify(i),
            }
        }
        if signals_ready {
            let got = self.read_signals();
            self.inputs.extend(got);
        }
        if !output_ready.is_empty() {
            // Requests and signals are answered before the output is read:
            // under a flood, reading is most of a round's work, and a
            // `ctl status` must not wait for it. But an exit is told after
            // what its process wrote before it ended (`flaky: exit 3`
            // after that run's lines, not before them): with an exit to
            // tell, one bounded read goes first.
            if !self
                .inputs
                .iter()
                .any(|i| matches!(i, Input::Exited { .. }))
            {
                self.drain_inputs();
            }
            let budget = output::drain_budget(output_ready.len());
            let w = output::writer();
            let mut round = w.round();
            for i in output_ready {
                self.drain_reader_into(i, budget, &mut round);
            }
            w.submit_round(round);
        }
        for (id, v) in self.probes.expire(now) {
            self.probe_verdict(ProbeId(id), v);
        }
        if let Some(ctl) = &mut self.ctl {
            ctl.expire(now);
        }
        if let Some(h) = &mut self.http {
            h.expire(now);
        }
        let framing = crate::proc::record::Framing::of(&self.cfg.log);
        for l in self.limiters.values() {
            l.borrow_mut().report_if_due(now, framing);
        }
        if self.keys_due.is_some_and(|t| t <= now) {
            self.keys_due = None;
            if let Some(k) = &mut self.keys {
                k.rewatch();
            }
            if let Some(f) = &mut self.on_keys_changed {
                let want = f(&self.cfg);
                self.inputs.push_back(Input::Sshd(want));
            }
        }
        if self.reconf_due.is_some_and(|t| t <= now) {
            self.reconf_due = None;
            self.inputs.push_back(Input::InputsChanged);
        }
        if let Some(out) = &mut self.notify_target {
            if out.next_deadline().is_some_and(|t| t <= now) {
                out.flush(now);
            }
        }
        self.inputs.push_back(Input::Tick);
    }
}
