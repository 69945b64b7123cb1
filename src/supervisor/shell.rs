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

use super::core::{label, Core, Effect, Input, ProbeId};
use super::{KeysChanged, Reconfigurer, Reloader};
use crate::config::model::{Config, ReadyCheck, Stream};
use crate::ctl::http::{Ask, HttpServer};
use crate::ctl::server::{Incoming, Server};
use crate::proc::exit::Exit;
use crate::proc::output::{self, Dest, Reader};
use crate::proc::probe::{Probes, Target, Verdict};
use crate::proc::record::Head;
use crate::proc::watch::{DirWatch, FileWatch};
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

/// Quiet time after a change in the key directories before they are read.
const KEYS_DEBOUNCE: Duration = Duration::from_millis(300);
/// Quiet time after a change of the live reconfigure's inputs (README
/// "Live reconfigure"): a kubelet update or an editor's save is a burst.
const RECONFIGURE_DEBOUNCE: Duration = Duration::from_millis(500);
/// Inputs handled between two looks at the signal fd, so that a stop
/// request is read soon even during a start of thousands of processes.
const SIGNAL_CHECK_EVERY: usize = 64;

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
    pub exit: Option<i32>,
    /// The service of each probe in flight, for the log.
    pub probe_names: std::collections::HashMap<u64, String>,
    /// Running one prepare step rather than the services.
    pub job: Option<JobWatch>,
    /// The last stderr lines of each service, for the termination report.
    pub tails: std::collections::HashMap<String, output::SharedTail>,
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
    /// Our own supervisor's `NOTIFY_SOCKET`.
    pub notify_target: Option<String>,
    /// The cgroup whose `memory.events` tells OOM kills, and the count
    /// seen so far.
    pub cgroup: Option<crate::proc::cgroup::Layout>,
    pub oom_seen: u64,
    pub reconfigurer: Option<Reconfigurer>,
    pub reconf_watch: Option<FileWatch>,
    pub reconf_due: Option<Instant>,
}

/// What the shell follows of a job (a prepare step).
#[derive(Default)]
pub(super) struct JobWatch {
    pub name: String,
    pub deadline: Option<Instant>,
    pub timed_out: bool,
    pub interrupted: Option<Signal>,
    pub pid: Option<i32>,
    pub exit: Option<Exit>,
    pub not_started: Option<String>,
    /// Its last stderr lines.
    pub tail: Vec<String>,
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
    Listener,
    Conn(u64),
    HttpListener,
    Http(u64),
    ProbeWake,
    Probe(u64),
    Reader(usize),
    Notify(usize),
}

impl Shell<'_> {
    pub fn run(&mut self) -> i32 {
        self.inputs.push_back(Input::Tick);
        let mut first = true;
        loop {
            self.drain_inputs();
            if std::mem::take(&mut first) {
                // The services run: now is the time to start the writer,
                // not on the exit path.
                output::writer().start();
            }
            if let Some(code) = self.exit {
                if self.job.is_some() {
                    self.finish_job();
                    return code;
                }
                return self.finish(code);
            }
            self.wait_and_gather();
        }
    }

    fn drain_inputs(&mut self) {
        let mut handled = 0usize;
        while let Some(input) = self.inputs.pop_front() {
            let now = Instant::now();
            for e in self.core.handle(input, now) {
                self.apply(e, now);
            }
            handled += 1;
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
                let input = match self.spawn_service(&spec, index) {
                    Ok(pid) => {
                        if let Some(j) = &mut self.job {
                            j.pid = Some(pid);
                        }
                        Input::Spawned { proc, pid }
                    }
                    Err((reason, status)) => {
                        if let Some(j) = &mut self.job {
                            j.not_started = Some(reason.clone());
                        }
                        Input::SpawnFailed {
                            proc,
                            reason,
                            status,
                        }
                    }
                };
                self.inputs.push_back(input);
            }
            Effect::Signal { pid, signal, group } => {
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
                working_dir,
            } => {
                self.probe_names.insert(probe.0, service.clone());
                if let Some(v) =
                    self.start_probe(probe, &service, &check, now + timeout, working_dir)
                {
                    self.probe_verdict(probe, v);
                }
            }
            Effect::CancelProbe(p) => {
                self.probe_names.remove(&p.0);
                self.probes.cancel(p.0);
            }
            Effect::Reply { conn, reply } => {
                if let Some(ctl) = &mut self.ctl {
                    ctl.reply(conn, &reply);
                }
            }
            Effect::Reload { conn } => {
                let result = match &mut self.reloader {
                    None => Err("no config file to reload".to_string()),
                    Some(reload) => reload().map(|(cfg, set)| {
                        self.cfg = cfg;
                        set
                    }),
                };
                self.inputs.push_back(Input::Reloaded { conn, result });
            }
            Effect::Reconfigure { conn, retry } => {
                let result = match &mut self.reconfigurer {
                    None => super::Prepared::Failed("no live reconfigure".into()),
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
            }
            Effect::Exit(code) => self.exit = Some(code),
            Effect::Hook {
                probe,
                spec,
                argv,
                timeout,
            } => {
                let mut hook = spec.as_ref().clone();
                hook.argv = argv;
                hook.name = format!("{} pre_stop", spec.name);
                // The hook is the service's: its name, its environment.
                hook.env.insert("MC_SERVICE".into(), spec.name.clone());
                hook.numprocesses = 1;
                hook.stdout = Stream::Prefix;
                hook.stderr = Stream::Prefix;
                match self.spawn_service(&Arc::new(hook), 0) {
                    Ok(pid) => self.probes.start_cmd(probe.0, pid, now + timeout),
                    Err((why, _)) => {
                        log::warn!("{}: pre_stop: {why}", spec.name);
                        self.inputs.push_back(Input::ProbeDone { probe, ok: false });
                    }
                }
            }
            Effect::Notify(message) => {
                if let Some(target) = &self.notify_target {
                    if let Err(e) = crate::proc::notify::send(target, &message) {
                        log::debug!("sd_notify to {target}: {e}");
                    }
                }
            }
        }
    }

    /// Spawn process `index` of `spec` with its output wired; the pid, or
    /// why not and the status a main service would give.
    fn spawn_service(
        &mut self,
        spec: &Arc<crate::config::model::Service>,
        index: usize,
    ) -> Result<i32, (String, i32)> {
        let creds = spawn::resolve_creds(spec).map_err(|r| (r, crate::error::EXIT_FAILURE))?;
        let name = label(spec, index);
        let mut new_readers = Vec::new();
        let tails = &mut self.tails;
        let limiters = &mut self.limiters;
        let rate = spec.log_rate_limit.unwrap_or(self.cfg.log.rate_limit);
        let mut out = |stream: &Stream, err: bool| -> std::io::Result<spawn::Out> {
            let (dest, head) = match stream {
                Stream::Inherit => return Ok(spawn::Out::Inherit),
                Stream::Null => return Ok(spawn::Out::Null),
                Stream::Prefix if err => (Dest::Stderr, Some(Head::service(&name, "stderr", '!'))),
                Stream::Prefix => (Dest::Stdout, Some(Head::service(&name, "stdout", '|'))),
                Stream::File(fs) => (Dest::File(Arc::new(fs.clone())), None),
            };
            let framed = head.is_some();
            let (r, w) = output::pipe()?;
            let mut reader = output::reader(r, dest, head);
            if err {
                let tail = tails.entry(spec.name.clone()).or_default().clone();
                reader = reader.with_tail(tail);
            }
            if let (Some(limit), true) = (rate, framed) {
                // One budget per service: all its processes, both streams.
                let l = limiters.entry(spec.name.clone()).or_insert_with(|| {
                    std::rc::Rc::new(std::cell::RefCell::new(output::Limiter::new(
                        &spec.name, limit,
                    )))
                });
                // A reload may have changed it.
                l.borrow_mut().set_limit(limit);
                reader = reader.with_limiter(l.clone());
            }
            new_readers.push(reader);
            Ok(spawn::Out::Pipe(w))
        };
        let pipes = out(&spec.stdout, false).and_then(|o| Ok((o, out(&spec.stderr, true)?)));
        let (stdout, stderr) = pipes.map_err(|e| {
            (
                format!("cannot create output pipes: {e}"),
                crate::error::EXIT_FAILURE,
            )
        })?;
        let mut env = spawn::service_env(&self.cfg, spec, creds.as_ref());
        let wants_notify = spec
            .ready
            .as_ref()
            .is_some_and(|r| r.check == ReadyCheck::Notify);
        if wants_notify {
            let uid = creds
                .as_ref()
                .map_or_else(|| nix::unistd::geteuid().as_raw(), |c| c.uid.as_raw());
            if let Some(value) = self.notify_socket(&spec.name, uid) {
                env.push(("NOTIFY_SOCKET".into(), value));
            }
        }
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
                for r in new_readers {
                    self.add_reader(r);
                }
                self.groups.insert(pid, spec.name.clone());
                Ok(pid)
            }
            Err(e) => {
                let prog = spec.argv.first().map(String::as_str).unwrap_or("");
                Err((
                    format!("cannot run {prog}: {e}"),
                    spawn::exec_error_status(&e),
                ))
            }
        }
    }

    fn add_reader(&mut self, r: Reader) {
        match self.readers.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(r),
            None => self.readers.push(Some(r)),
        }
    }

    fn start_probe(
        &mut self,
        probe: ProbeId,
        service: &str,
        check: &ReadyCheck,
        deadline: Instant,
        working_dir: Option<std::path::PathBuf>,
    ) -> Option<Verdict> {
        match check {
            ReadyCheck::Tcp(a) => self
                .probes
                .start_net(probe.0, &Target::Tcp(a.clone()), deadline),
            ReadyCheck::Http(u) => {
                self.probes
                    .start_net(probe.0, &Target::Http(u.clone()), deadline)
            }
            // The core never probes these: READY=1 comes on the socket.
            ReadyCheck::Notify => Some(Verdict::Fail("notify is not probed".into())),
            ReadyCheck::File(p) => Some(if p.exists() {
                Verdict::Ok
            } else {
                Verdict::Fail(format!("{} does not exist", p.display()))
            }),
            ReadyCheck::Cmd(argv) => {
                let res = spawn::spawn(spawn::SpawnOpts {
                    argv,
                    env: spawn::mc_env(&self.cfg, service),
                    copy_env: true,
                    working_dir: working_dir.as_deref(),
                    creds: None,
                    rlimits: &[],
                    stdout: spawn::Out::Null,
                    stderr: spawn::Out::Null,
                    foreground: false,
                    stdin_null: true,
                });
                match res {
                    Ok(pid) => {
                        self.probes.start_cmd(probe.0, pid, deadline);
                        None
                    }
                    Err(e) => Some(Verdict::Fail(format!("cannot run the probe: {e}"))),
                }
            }
        }
    }

    fn probe_verdict(&mut self, probe: ProbeId, v: Verdict) {
        let service = self.probe_names.remove(&probe.0).unwrap_or_default();
        if let Verdict::Fail(why) = &v {
            log::debug!("{service}: probe failed: {why}");
        }
        self.inputs.push_back(Input::ProbeDone {
            probe,
            ok: v == Verdict::Ok,
        });
    }

    // ----- waiting -----------------------------------------------------------

    fn wait_and_gather(&mut self) {
        let now = Instant::now();
        let job_deadline = self
            .job
            .as_ref()
            .filter(|j| !j.timed_out && !self.core.is_stopping())
            .and_then(|j| j.deadline);
        let deadline = [
            self.core.next_deadline(),
            self.probes.next_deadline(),
            self.keys_due,
            self.reconf_due,
            self.ctl.as_ref().and_then(Server::next_deadline),
            self.http.as_ref().and_then(HttpServer::next_deadline),
            job_deadline,
            self.limiters
                .values()
                .filter_map(|l| l.borrow().due())
                .min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = crate::proc::poll_timeout(deadline, now);
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
        if let Some(ctl) = &self.ctl {
            srcs.push((
                Src::Listener,
                ctl.listener_fd().as_raw_fd(),
                PollFlags::POLLIN,
            ));
            for (id, fd, ev) in ctl.poll_fds() {
                srcs.push((Src::Conn(id), fd.as_raw_fd(), ev));
            }
        }
        if let Some(h) = &self.http {
            srcs.push((
                Src::HttpListener,
                h.listener_fd().as_raw_fd(),
                PollFlags::POLLIN,
            ));
            for (id, fd, ev) in h.poll_fds() {
                srcs.push((Src::Http(id), fd.as_raw_fd(), ev));
            }
        }
        for (id, fd, ev) in self.probes.poll_fds() {
            let src = id.map_or(Src::ProbeWake, Src::Probe);
            srcs.push((src, fd.as_raw_fd(), ev));
        }
        for (i, r) in self.readers.iter().enumerate() {
            if let Some(r) = r {
                srcs.push((Src::Reader(i), r.fd().as_raw_fd(), PollFlags::POLLIN));
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
            // `ctl status` must not wait for it.
            self.drain_inputs();
            let budget = output::drain_budget(output_ready.len());
            for i in output_ready {
                self.drain_reader(i, budget);
            }
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
        for l in self.limiters.values() {
            l.borrow_mut().report_if_due(now);
        }
        if job_deadline.is_some_and(|d| d <= now) {
            if let Some(j) = &mut self.job {
                j.timed_out = true;
                log::warn!("{}: timed out: stopping the step", j.name);
            }
            for e in self.core.stop_now(now) {
                self.apply(e, now);
            }
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
        self.inputs.push_back(Input::Tick);
    }

    /// Signals as inputs; SIGCHLD reaps here (exits become inputs).
    fn read_signals(&mut self) -> Vec<Input> {
        let mut out = Vec::new();
        for r in self.signals.drain() {
            // Tests of the panic hook only (cargo feature fault-injection,
            // never in a release build).
            #[cfg(feature = "fault-injection")]
            if r.signal == Signal::SIGUSR2
                && std::env::var_os("MC_FAULT").is_some_and(|v| v == "panic-on-usr2")
            {
                panic!("fault injection: MC_FAULT=panic-on-usr2");
            }
            if r.signal == Signal::SIGCHLD {
                self.reap_into(&mut out);
                continue;
            }
            if let Some(j) = &mut self.job {
                let stop = matches!(r.signal, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT);
                if stop && j.interrupted.is_none() {
                    j.interrupted = Some(r.signal);
                }
            }
            out.push(Input::Signal(r.signal));
        }
        out
    }

    fn reap_into(&mut self, out: &mut Vec<Input>) {
        let probes = &mut self.probes;
        let job = &mut self.job;
        let groups = &mut self.groups;
        let cgroup = &self.cgroup;
        let oom_seen = &mut self.oom_seen;
        reap::reap_all(|pid, exit| {
            match probes.exited(pid, exit == Exit::Code(0), &exit.to_string()) {
                Some(Some((id, v))) => {
                    if let Verdict::Fail(why) = &v {
                        log::debug!("probe {id}: failed: {why}");
                    }
                    out.push(Input::ProbeDone {
                        probe: ProbeId(id),
                        ok: v == Verdict::Ok,
                    })
                }
                Some(None) => {}
                None => {
                    if let Some(j) = job.as_mut().filter(|j| j.pid == Some(pid)) {
                        j.exit = Some(exit);
                        // Nothing the step started in its group outlives it.
                        spawn::signal_group(pid, Signal::SIGKILL);
                    }
                    if groups.remove(&pid).is_none() {
                        // An orphan re-parented to us: reaped, nothing to tell.
                        return;
                    }
                    // A SIGKILL while the cgroup's OOM kill count rose: the
                    // kernel's doing, not somebody's.
                    let mut oom = false;
                    if exit == Exit::Signal(Signal::SIGKILL as i32) {
                        if let Some(n) = cgroup.as_ref().and_then(crate::proc::cgroup::oom_kills) {
                            oom = n > *oom_seen;
                            *oom_seen = n;
                        }
                    }
                    out.push(Input::Exited { pid, exit, oom })
                }
            }
        });
    }

    /// sd_notify messages, from a process of a service that asked for one.
    /// The `NOTIFY_SOCKET` value of service `name` (its socket made now if
    /// it has none yet).
    fn notify_socket(&mut self, name: &str, uid: u32) -> Option<String> {
        if let Some((_, n, u)) = self.notify.iter_mut().find(|(s, _, _)| s == name) {
            *u = uid;
            return Some(n.env_value.clone());
        }
        let nonce = self.notify_seed ^ (self.notify.len() as u64 + 1).rotate_left(48);
        match crate::proc::notify::NotifySocket::bind(nonce) {
            Ok(n) => {
                let value = n.env_value.clone();
                self.notify.push((name.to_string(), n, uid));
                Some(value)
            }
            Err(e) => {
                log::error!("{name}: cannot make its sd_notify socket: {e}");
                None
            }
        }
    }

    /// The messages on service `i`'s socket. One counts when its sender is
    /// a process of that service, or has already gone but ran as the
    /// service's user; anything else (another process that learnt the
    /// name) is ignored.
    fn read_notify(&mut self, i: usize) {
        let Some((service, n, uid)) = self.notify.get(i) else {
            return;
        };
        for (who, message) in n.receive() {
            let ours = who.is_some_and(|(pid, sender_uid)| {
                match nix::unistd::getpgid(Some(Pid::from_raw(pid))) {
                    Ok(group) => self.groups.get(&group.as_raw()) == Some(service),
                    Err(_) => sender_uid == *uid,
                }
            });
            if ours {
                self.inputs.push_back(Input::Notify {
                    service: service.clone(),
                    message,
                });
            } else {
                log::debug!("sd_notify message for {service} from {who:?}, not of it: ignored");
            }
        }
    }

    /// One wake-up's worth of reader `i`'s output; `true` when more is
    /// waiting already.
    fn drain_reader(&mut self, i: usize, budget: usize) -> bool {
        if let Some(slot) = self.readers.get_mut(i) {
            if let Some(r) = slot {
                match output::drain(r, budget) {
                    output::Drained::Closed => *slot = None,
                    output::Drained::More => return true,
                    output::Drained::Open => {}
                }
            }
        }
        false
    }

    fn serve_conn(&mut self, id: u64, ev: PollFlags, now: Instant) {
        let Some(ctl) = &mut self.ctl else { return };
        if ev.contains(PollFlags::POLLOUT) {
            ctl.write(id);
        }
        if !ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
        for msg in ctl.read(id, now) {
            match msg {
                Incoming::Request(cmd) => self.inputs.push_back(Input::Ctl { conn: id, cmd }),
                Incoming::Bad(e) => ctl.reply(id, &crate::ctl::proto::Reply::error(e)),
                Incoming::TooLong => {
                    ctl.reply(
                        id,
                        &crate::ctl::proto::Reply::error("request line too long"),
                    );
                    ctl.close_after_replies(id);
                }
            }
        }
    }

    fn serve_http(&mut self, id: u64, ev: PollFlags) {
        let Some(h) = &mut self.http else { return };
        if ev.contains(PollFlags::POLLOUT) {
            h.write(id);
            return;
        }
        if ev.contains(PollFlags::POLLIN) {
            // Read before a hang-up: a client may send its request and
            // close its side at once.
            if let Some(Ask::Metrics(id)) = h.read(id) {
                // A read of the core's state, not a command: no input.
                let text = self.core.metrics_text();
                h.respond(
                    id,
                    200,
                    crate::supervisor::metrics::CONTENT_TYPE,
                    text.as_bytes(),
                );
            }
        } else if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            h.drop_conn(id);
        }
    }

    // ----- the end -----------------------------------------------------------

    /// A job has ended: collect its last output, briefly.
    fn finish_job(&mut self) {
        let until = Instant::now() + JOB_OUTPUT_GRACE;
        while self.readers.iter().any(Option::is_some) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let fds: Vec<(usize, RawFd)> = self
                .readers
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().map(|r| (i, r.fd().as_raw_fd())))
                .collect();
            let ready: Vec<usize> = {
                // SAFETY: the readers live, untouched, until poll returns.
                let mut pfds: Vec<PollFd> = fds
                    .iter()
                    .map(|(_, fd)| {
                        PollFd::new(unsafe { BorrowedFd::borrow_raw(*fd) }, PollFlags::POLLIN)
                    })
                    .collect();
                let _ = poll(&mut pfds, crate::proc::poll_timeout(Some(until), now));
                fds.iter()
                    .zip(&pfds)
                    .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
                    .map(|((i, _), _)| *i)
                    .collect()
            };
            for i in ready {
                self.drain_reader(i, output::MAX_DRAIN);
            }
        }
        // What a descendant still holds open is not waited for.
        self.readers.clear();
        if let Some(j) = &mut self.job {
            if let Some(t) = self.tails.get(&j.name) {
                j.tail = t.borrow().lines();
            }
        }
    }

    /// Everything has stopped: make sure nothing outlives us, collect the
    /// last output, print the summary, and return the exit status.
    fn finish(&mut self, code: i32) -> i32 {
        if self.is_pid1 {
            // As PID 1, whatever is left in the container dies with us.
            let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
        } else if reap::reap_all(|_, _| {}) {
            // As a subreaper, with children left (the usual case has none:
            // then nothing here costs a look at /proc): kill what is left;
            // killing a child re-parents its own children to us, so repeat
            // until none is left.
            let me = std::process::id() as i32;
            for _ in 0..100 {
                let left = reap::children_of(me);
                if left.is_empty() {
                    break;
                }
                for pid in left {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if reap::reap_all(|_, _| {}) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        reap::wait_all();
        for i in 0..self.readers.len() {
            // Everything the services wrote before they ended, not one
            // wake-up's budget (bounded: a writer we could not kill, in
            // another namespace, must not keep us here).
            for _ in 0..FINAL_DRAINS {
                if !self.drain_reader(i, output::MAX_DRAIN) {
                    break;
                }
            }
        }
        for l in self.limiters.values() {
            l.borrow_mut().report();
        }
        for line in self.core.summary() {
            log::info!("summary: {line}");
        }
        let mut report = self.core.termination();
        if let Some(t) = report.subject.as_ref().and_then(|s| self.tails.get(s)) {
            report.tail = t.borrow().lines();
        }
        if let Some(path) = &self.cfg.termination_log {
            report.write(path);
        }
        log::info!("{}", report.summary());
        code
    }
}
