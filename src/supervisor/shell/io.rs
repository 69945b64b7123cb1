//! The shell's hands: starting a service or a probe, and reading each
//! source the loop polls (signals, exits, sd_notify, output, control and
//! metrics connections), then the end of the run. Part of `shell.rs`.

use super::*;
use crate::ctl::http::Page;
use crate::ctl::proto::Health;

/// Why a spawn did not happen.
pub(super) struct NotStarted {
    pub reason: String,
    /// What it makes of the launcher's end for a main service
    /// (`NotFound`, `NotExecutable`, `Failed`).
    pub outcome: Outcome,
    /// An env file, secret or credential could not be read: a failed
    /// start tried again under the service's backoff, not FAILED at once.
    pub retry: bool,
}

impl NotStarted {
    fn fatal(reason: String, outcome: Outcome) -> NotStarted {
        NotStarted {
            reason,
            outcome,
            retry: false,
        }
    }
}

impl Shell<'_> {
    /// Spawn process `index` of `spec` with its output wired; the pid, or
    /// why not. `helper_of`: the service a helper (probe, hook) belongs
    /// to, whose credentials directory it shares.
    pub(super) fn spawn_service(
        &mut self,
        spec: &Arc<crate::config::model::Service>,
        index: usize,
        helper_of: Option<&str>,
    ) -> Result<i32, NotStarted> {
        let creds =
            spawn::resolve_creds(spec).map_err(|r| NotStarted::fatal(r, Outcome::Failed))?;
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
            let which = if err {
                output::Stream::Stderr
            } else {
                output::Stream::Stdout
            };
            let mut reader = output::reader(r, dest, head).with_ring(&spec.name, which);
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
            NotStarted::fatal(format!("cannot create output pipes: {e}"), Outcome::Failed)
        })?;
        // Read at each start: a rotated file applies at the next one. A
        // file not there yet (a secret mounted late) is retried.
        let missing = |reason: String| NotStarted {
            reason,
            outcome: Outcome::Failed,
            retry: true,
        };
        // A helper gets what its service's process started with.
        let files = match helper_of.and_then(|s| self.env_files.get(s)) {
            Some(files) => files.clone(),
            None => {
                let files =
                    std::rc::Rc::new(crate::proc::envfile::load(&self.cfg, spec).map_err(missing)?);
                if helper_of.is_none() {
                    self.env_files.insert(spec.name.clone(), files.clone());
                }
                files
            }
        };
        let owner = creds.as_ref().map_or_else(
            || (nix::unistd::geteuid(), nix::unistd::getegid()),
            |c| (c.uid, c.gid),
        );
        let cred_dir = match helper_of {
            // A helper uses the service's own copy, as it is.
            Some(service) => crate::proc::envfile::credentials_dir(&self.cfg, spec, service),
            // A copy that holds what the sources hold now stays (shared
            // by the service's processes); else a new one is swapped in.
            None => crate::proc::envfile::install_credentials(&self.cfg, spec, owner)
                .map_err(missing)?,
        };
        let mut env =
            spawn::service_env(&self.cfg, spec, creds.as_ref(), &files, cred_dir.as_deref());
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
            caller_signals: spec.main,
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
                Err(NotStarted::fatal(
                    format!("cannot run {prog}: {e}"),
                    spawn::exec_error_status(&e),
                ))
            }
        }
    }

    /// Spawn a helper process of `spec` (a `cmd` probe, a `pre_stop`
    /// hook) through the service's own path: its user, groups,
    /// environment, working dir, rlimits and session rules, as the
    /// service itself. The pid is the caller's to follow (not a process
    /// of the service: its exit is no service exit).
    pub(super) fn spawn_helper(
        &mut self,
        spec: &Arc<crate::config::model::Service>,
        argv: Vec<String>,
        what: &str,
        output: Stream,
    ) -> Result<i32, NotStarted> {
        let mut helper = spec.as_ref().clone();
        helper.argv = argv;
        helper.name = format!("{} {what}", spec.name);
        // The helper is the service's: its name, its environment.
        helper.env.insert("MC_SERVICE".into(), spec.name.clone());
        helper.numprocesses = 1;
        helper.stdout = output.clone();
        helper.stderr = output;
        // Never the terminal's foreground, never a NOTIFY_SOCKET.
        helper.main = false;
        helper.ready = None;
        helper.live = None;
        let pid = self.spawn_service(&Arc::new(helper), 0, Some(&spec.name))?;
        self.groups.remove(&pid);
        Ok(pid)
    }

    pub(super) fn add_reader(&mut self, r: Reader) {
        match self.readers.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(r),
            None => self.readers.push(Some(r)),
        }
    }

    pub(super) fn start_probe(
        &mut self,
        probe: ProbeId,
        spec: &Arc<crate::config::model::Service>,
        check: &ReadyCheck,
        deadline: Instant,
    ) -> Option<Verdict> {
        match self.probes.start(probe.0, check, deadline) {
            Started::Done(v) => Some(v),
            Started::Pending => None,
            Started::Spawn(argv) => {
                match self.spawn_helper(spec, argv.to_vec(), "probe", Stream::Null) {
                    Ok(pid) => {
                        self.probes.start_cmd(probe.0, pid, deadline);
                        None
                    }
                    Err(e) => Some(Verdict::Fail(format!("cannot run the probe: {}", e.reason))),
                }
            }
        }
    }

    pub(super) fn probe_verdict(&mut self, probe: ProbeId, v: Verdict) {
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

    /// Signals as inputs; SIGCHLD reaps here (exits become inputs).
    pub(super) fn read_signals(&mut self) -> Vec<Input> {
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
            out.push(Input::Signal(r.signal));
        }
        out
    }

    pub(super) fn reap_into(&mut self, out: &mut Vec<Input>) {
        let probes = &mut self.probes;
        let groups = &mut self.groups;
        let cgroup = &self.cgroup;
        let oom_seen = &mut self.oom_seen;
        let killed = &mut self.killed;
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
                    if groups.remove(&pid).is_none() {
                        // An orphan re-parented to us: reaped, nothing to tell.
                        return;
                    }
                    // A SIGKILL the launcher did not send, while the
                    // cgroup's OOM kill count rose since the last look
                    // (taken at each SIGKILL exit and before each SIGKILL
                    // of ours): the kernel's doing, not somebody's.
                    let ours = killed.remove(&pid);
                    let mut oom = false;
                    if exit == Exit::Signal(Signal::SIGKILL as i32) {
                        if let Some(n) = cgroup.as_ref().and_then(crate::proc::cgroup::oom_kills) {
                            oom = !ours && n > *oom_seen;
                            *oom_seen = n;
                        }
                    }
                    out.push(Input::Exited { pid, exit, oom })
                }
            }
        });
    }

    /// Take the cgroup's OOM kill count as seen (a rise before now is not
    /// the cause of what happens next).
    pub(super) fn refresh_oom_seen(&mut self) {
        if let Some(n) = self
            .cgroup
            .as_ref()
            .and_then(crate::proc::cgroup::oom_kills)
        {
            self.oom_seen = n;
        }
    }

    /// sd_notify messages, from a process of a service that asked for one.
    /// The `NOTIFY_SOCKET` value of service `name` (its socket made now if
    /// it has none yet).
    pub(super) fn notify_socket(&mut self, name: &str, uid: u32) -> Option<String> {
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

    /// The messages on service `i`'s socket. One counts when its sender
    /// (the pid the kernel gives) is in the session of one of that
    /// service's processes (each is a session leader: no other service's
    /// process can join it), or has already gone but ran as the service's
    /// user; anything else (another process that learnt the name) is
    /// ignored.
    pub(super) fn read_notify(&mut self, i: usize) {
        let Some((service, n, uid)) = self.notify.get(i) else {
            return;
        };
        for (who, message) in n.receive() {
            let ours = who.is_some_and(|(pid, sender_uid)| {
                match nix::unistd::getsid(Some(Pid::from_raw(pid))) {
                    Ok(session) => self.groups.get(&session.as_raw()) == Some(service),
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

    /// One wake-up's worth of reader `i`'s output, queued on its own.
    pub(super) fn drain_reader(&mut self, i: usize, budget: usize) -> output::Drained {
        let w = output::writer();
        let mut round = w.round();
        let state = self.drain_reader_into(i, budget, &mut round);
        w.submit_round(round);
        state
    }

    /// One wake-up's worth of reader `i`'s output into `round`; a reader
    /// whose writers are gone is dropped.
    pub(super) fn drain_reader_into(
        &mut self,
        i: usize,
        budget: usize,
        round: &mut output::Round,
    ) -> output::Drained {
        let Some(slot) = self.readers.get_mut(i) else {
            return output::Drained::Closed;
        };
        let Some(r) = slot else {
            return output::Drained::Closed;
        };
        let framing = crate::proc::record::Framing::of(&self.cfg.log);
        let state = output::drain_into(r, budget, round, framing);
        if matches!(state, output::Drained::Closed) {
            *slot = None;
        }
        state
    }

    pub(super) fn serve_conn(&mut self, id: u64, ev: PollFlags, now: Instant) {
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

    pub(super) fn serve_http(&mut self, id: u64, ev: PollFlags) {
        let Some(h) = &mut self.http else { return };
        if ev.contains(PollFlags::POLLOUT) {
            h.write(id);
            return;
        }
        if ev.contains(PollFlags::POLLIN) {
            // Read before a hang-up: a client may send its request and
            // close its side at once.
            if let Some(Ask { id, page }) = h.read(id) {
                // A read of the core's state, not a command: no input.
                let health = |which| {
                    let r = self.core.health(which);
                    match (r.ok, r.message, r.error) {
                        (true, m, _) => (200, m.unwrap_or_default() + "\n"),
                        (false, _, e) => (503, e.unwrap_or_default() + "\n"),
                    }
                };
                let (status, ctype, body) = match page {
                    Page::Metrics => (
                        200,
                        crate::supervisor::core::metrics::CONTENT_TYPE,
                        self.core.metrics_text(),
                    ),
                    Page::Live => {
                        let (st, b) = health(Health::Live);
                        (st, "text/plain; charset=utf-8", b)
                    }
                    Page::Ready => {
                        let (st, b) = health(Health::Ready);
                        (st, "text/plain; charset=utf-8", b)
                    }
                    Page::Status => {
                        let r = self.core.status_reply(Instant::now());
                        let json = serde_json::to_string(&r).unwrap_or_default();
                        (200, "application/json", json + "\n")
                    }
                };
                h.respond(id, status, ctype, body.as_bytes());
            }
        } else if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            h.drop_conn(id);
        }
    }

    // ----- the end -----------------------------------------------------------

    /// A job has ended: collect its last output, briefly.
    pub(super) fn finish_job(&mut self) {
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
    }

    /// Everything has stopped: make sure nothing outlives us, collect the
    /// last output, print the summary, and return how the launcher ends.
    pub(super) fn finish(&mut self, outcome: Outcome) -> Outcome {
        let left = if self.is_pid1 {
            // As PID 1, whatever is left in the container dies with us.
            let _ = nix::sys::signal::kill(Pid::from_raw(-1), Signal::SIGKILL);
            true
        } else {
            reap::reap_all(|_, _| {})
        };
        if left && !self.is_pid1 {
            // As a subreaper, with children left (the usual case has none:
            // then nothing here costs a look at /proc): kill what is left;
            // killing a child re-parents its own children to us, so repeat
            // until none is left.
            let me = std::process::id() as i32;
            for _ in 0..100 {
                let rest = reap::children_of(me);
                if rest.is_empty() {
                    break;
                }
                for pid in rest {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if reap::reap_all(|_, _| {}) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        if left {
            reap::wait_all();
        }
        let give_up = Instant::now() + output::STALLED;
        for i in 0..self.readers.len() {
            // Everything the services wrote before they ended, not one
            // wake-up's budget (bounded: a writer we could not kill, in
            // another namespace, must not keep us here).
            for _ in 0..FINAL_DRAINS {
                output::writer().wait_room(give_up);
                // Until EOF, or an empty pipe that a process we could not
                // kill still holds open.
                if matches!(
                    self.drain_reader(i, output::MAX_DRAIN),
                    output::Drained::Closed | output::Drained::Empty
                ) {
                    break;
                }
            }
        }
        for l in self.limiters.values() {
            l.borrow_mut()
                .report(crate::proc::record::Framing::of(&self.cfg.log));
        }
        if let Some(out) = &mut self.notify_target {
            out.give_up();
        }
        for line in self.core.summary() {
            log::info!("summary: {line}");
        }
        let mut report = self.core.termination();
        if let Some(t) = report.subject.as_ref().and_then(|s| self.tails.get(s)) {
            report.tail = t.borrow().lines();
        }
        if let Some(path) = &self.cfg.termination_log {
            crate::fsutil::write_termination_log(path, Some(&self.cfg.paths.volume), &report);
        }
        log::info!("{}", report.summary());
        outcome
    }
}
