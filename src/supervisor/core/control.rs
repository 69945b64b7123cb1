//! The core's answers to the control socket, its status table and its
//! summary lines. Still pure: a command changes the core's state and comes
//! back as a `Reply` (or as effects, for `reload`).

use super::{Cause, ConnId, Core, Effect, Role, Status, Svc};
use crate::ctl::proto::{
    Command, Health, ProbeState, Reply, ServiceDetail, ServiceState, StateName,
};
use crate::supervisor::machine::{Event, State};
use crate::units::fmt_duration;
use std::time::Instant;

impl Core {
    /// Carry out a command; `None` when the answer comes later (reload).
    pub(super) fn command(
        &mut self,
        conn: ConnId,
        cmd: Command,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) -> Option<Reply> {
        // An unknown service is said first, whatever the verb.
        let target = match cmd.service().map(|n| (n, self.find(n))) {
            Some((n, None)) => return Some(Reply::error(format!("no such service: {n}"))),
            Some((_, found)) => found,
            None => None,
        };
        if self.is_stopping() && !answered_while_stopping(&cmd) {
            return Some(Reply::error("the launcher is stopping"));
        }
        Some(match (cmd, target) {
            (Command::Status { name: None }, _) => self.status_reply(now),
            (Command::Status { name: Some(_) }, s) => Reply {
                ok: true,
                services: Some(
                    s.and_then(|s| self.svcs.get(&s))
                        .map(|svc| {
                            let mut row = self.row(svc, now);
                            row.detail = Some(detail(svc));
                            row
                        })
                        .into_iter()
                        .collect(),
                ),
                ..Reply::default()
            },
            (
                Command::Logs {
                    name,
                    follow,
                    lines,
                },
                s,
            ) => {
                // The shell's rings, not the core's state: read there.
                let streams = s
                    .and_then(|s| self.svcs.get(&s))
                    .map(|svc| (svc.spec.stdout.clone(), svc.spec.stderr.clone()));
                fx.push(Effect::ReadLogs {
                    conn,
                    service: name,
                    streams,
                    lines,
                    follow,
                });
                return None;
            }
            (Command::Metrics {}, _) => Reply {
                ok: true,
                metrics: Some(self.metrics_text()),
                ..Reply::default()
            },
            (Command::Health { check }, _) => self.health(check),
            (Command::Quit {}, _) => {
                log::info!("quit requested on the control socket: stopping");
                self.begin_stop(None, Cause::Requested("ctl quit".into()), now, fx);
                Reply::ok("stopping")
            }
            (Command::Reload {}, _) if !self.can_reload => Reply::error("no config file to reload"),
            (Command::Reload {}, _) => {
                fx.push(Effect::Reload { conn: Some(conn) });
                return None;
            }
            (Command::Reconfigure {}, _) if !self.reconf.enabled => {
                Reply::error("no live reconfigure: the launcher ran no prepare phase")
            }
            (Command::Reconfigure {}, _) => {
                self.request_reconfigure(Some(conn), fx);
                return None;
            }
            (Command::Start { name } | Command::Restart { name }, Some(s))
                if self.svcs.get(&s).is_some_and(|x| x.job.is_some()) =>
            {
                match self.run_now(s, now, fx) {
                    Ok(()) => Reply::ok(format!("{name}: run started")),
                    Err(e) => Reply::error(format!("{name}: {e}")),
                }
            }
            (Command::Start { name }, Some(s)) => {
                if self.svcs.get(&s).is_some_and(Svc::has_live_process) {
                    return Some(Reply::error(format!("{name} is already running")));
                }
                self.begin_service(s, now);
                self.start_procs(s, now, fx);
                Reply::ok(format!("{name} started"))
            }
            (Command::Stop { name }, Some(s))
                if self.svcs.get(&s).is_some_and(|x| x.job.is_some()) =>
            {
                self.stop_run(s, now, fx);
                Reply::ok(format!("{name}: run stopping"))
            }
            (Command::Stop { name }, Some(s)) => {
                if let Some(svc) = self.svcs.get_mut(&s) {
                    svc.status = Status::Manual;
                }
                self.svc_event(s, &Event::Stop, now, fx);
                Reply::ok(format!("{name} stopping"))
            }
            (Command::Restart { name }, Some(s)) => {
                if let Some(svc) = self.svcs.get_mut(&s) {
                    svc.facts.restart_reason = Some("ctl".into());
                }
                let live = self.proc_ids(s, true, |p| p.is_live());
                if live.is_empty() {
                    self.begin_service(s, now);
                    self.start_procs(s, now, fx);
                } else {
                    for id in live {
                        self.proc_event(id, Event::Restart, now, fx);
                    }
                }
                Reply::ok(format!("{name} restarting"))
            }
            (Command::Signal { name, signal }, Some(s)) => {
                let pids: Vec<i32> = self
                    .svcs
                    .get(&s)
                    .map(|x| x.procs.iter().filter_map(|p| p.m.pid()).collect())
                    .unwrap_or_default();
                for &pid in &pids {
                    fx.push(Effect::Signal {
                        pid,
                        signal,
                        group: true,
                    });
                }
                Reply::ok(format!(
                    "{} sent to {} process(es) of {name}",
                    crate::signals::short_name(signal),
                    pids.len()
                ))
            }
            (Command::Incr { name }, Some(s)) => {
                // The runtime count moves; the definition stays as written,
                // so a reload of an unchanged file restarts nothing.
                let Some(n) = self.grow(s) else {
                    return Some(Reply::error(format!(
                        "{name} runs {} processes, the most there can be",
                        super::start::MAX_PROCESSES
                    )));
                };
                let started = self
                    .svcs
                    .get(&s)
                    .is_some_and(|x| x.status == Status::Started);
                let id = self
                    .svcs
                    .get(&s)
                    .and_then(|x| x.procs.get(n - 1))
                    .map(|p| p.id);
                if let (true, Some(id)) = (started, id) {
                    self.proc_event(id, Event::Start, now, fx);
                }
                Reply {
                    numprocesses: Some(n as u32),
                    ..Reply::ok(format!("{name}: {n} process(es)"))
                }
            }
            (Command::Decr { name }, Some(s)) => {
                let Some(svc) = self.svcs.get_mut(&s) else {
                    return Some(Reply::error("gone"));
                };
                if svc.scale <= 1 {
                    return Some(Reply::error(format!("{name} runs one process: use stop")));
                }
                svc.scale -= 1;
                let n = svc.scale;
                if let Some(id) = svc.procs.get(n).map(|p| p.id) {
                    self.proc_event(id, Event::Stop, now, fx);
                }
                Reply {
                    numprocesses: Some(n as u32),
                    ..Reply::ok(format!("{name}: {n} process(es)"))
                }
            }
            // `service()` named it and `find` found it, above.
            (
                Command::Start { name }
                | Command::Stop { name }
                | Command::Restart { name }
                | Command::Signal { name, .. }
                | Command::Incr { name }
                | Command::Decr { name },
                None,
            ) => Reply::error(format!("no such service: {name}")),
        })
    }

    /// The answer to `ctl status` (and HTTP `/status`).
    pub fn status_reply(&self, now: Instant) -> Reply {
        Reply {
            ok: true,
            services: Some(self.status(now)),
            reconfigure: self.reconf.last.clone(),
            pillar: self.pillar.clone(),
            ..Reply::default()
        }
    }

    /// The answer to `ctl health [--live|--ready]` (and HTTP `/livez`,
    /// `/readyz`): ok with a word, or an error with the one-line reason.
    pub fn health(&self, which: Health) -> Reply {
        if which == Health::Live {
            // A FAILED service will not come back by itself: a critical
            // one, or an autostart one that does not say `liveness:
            // ignore`, makes the container worth restarting.
            let failed: Vec<String> = self
                .svcs
                .values()
                .filter(|s| matches!(s.status, Status::Failed(_)))
                .filter(|s| {
                    s.spec.critical
                        || (s.spec.autostart && !s.spec.liveness_ignore && s.role != Role::Step)
                })
                .map(|s| s.name().to_string())
                .collect();
            return if failed.is_empty() {
                Reply::ok("alive")
            } else {
                Reply::error(format!(
                    "FAILED, will not come back by itself: {}",
                    failed.join(", ")
                ))
            };
        }
        let bad: Vec<String> = self
            .svcs
            .values()
            .filter(|s| {
                s.spec.autostart
                    && s.status != Status::Retired
                    && s.role != Role::Step
                    && s.job.is_none()
                    && !s.is_up()
            })
            .map(|s| s.name().to_string())
            .collect();
        // Only readiness fails on a drain or stop: plain `ctl health` (a
        // Docker HEALTHCHECK) says whether the services run and are ready.
        if which == Health::Ready && self.is_stopping() {
            Reply::error("stopping")
        } else if bad.is_empty() {
            Reply::ok("healthy")
        } else {
            Reply::error(format!("not running or not ready: {}", bad.join(", ")))
        }
    }

    /// The rows of `ctl status`.
    pub(super) fn status(&self, now: Instant) -> Vec<ServiceState> {
        self.svcs
            .values()
            .filter(|s| s.status != Status::Retired)
            .map(|s| self.row(s, now))
            .collect()
    }

    /// One row of `ctl status`.
    fn row(&self, s: &Svc, now: Instant) -> ServiceState {
        let procs: Vec<_> = s.active().map(|p| &p.m).collect();
        let pids: Vec<i32> = procs.iter().filter_map(|p| p.pid()).collect();
        let since = procs
            .iter()
            .filter_map(|p| match p.state {
                State::Running { since, .. } => Some(since),
                _ => None,
            })
            .min();
        let stopping = procs
            .iter()
            .any(|p| matches!(p.state, State::Stopping { .. }));
        let backoff = procs
            .iter()
            .any(|p| matches!(p.state, State::Backoff { .. }));
        let state = match &s.status {
            Status::Failed(_) => StateName::Failed,
            _ if stopping => StateName::Stopping,
            _ if !pids.is_empty() && !s.ready_ok() => StateName::Starting,
            _ if !pids.is_empty() => StateName::Running,
            _ if backoff => StateName::Backoff,
            Status::Pending => StateName::Pending,
            Status::Manual if s.job.as_ref().is_some_and(|j| j.next_at.is_some()) => {
                StateName::Scheduled
            }
            Status::Manual | Status::Retired => StateName::Stopped,
            Status::Started => StateName::Ended,
        };
        ServiceState {
            name: s.name().to_string(),
            state,
            pids,
            uptime_s: since.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            restarts: procs.iter().map(|p| p.restarts).sum(),
            last_exit: procs
                .iter()
                .filter_map(|p| p.last_exit)
                .next_back()
                .map(|e| e.to_string()),
            numprocesses: s.scale as u32,
            reason: match &s.status {
                Status::Failed(r) => Some(r.clone()),
                // Waiting to retry a start that could not happen.
                _ => procs
                    .iter()
                    .filter(|p| matches!(p.state, State::Backoff { .. }))
                    .find_map(|p| p.not_started.clone())
                    .map(|r| format!("not started: {r}")),
            },
            restart_reason: s.facts.restart_reason.clone(),
            oom: s.facts.last_oom,
            oom_kills: s.facts.oom_kills,
            ready: s.is_up(),
            status: s.facts.status_text.clone(),
            job: self.job_state(s),
            next_restart_s: procs
                .iter()
                .filter_map(|p| match p.state {
                    State::Backoff { until } => Some(until),
                    _ => None,
                })
                .min()
                .map(|t| t.saturating_duration_since(now).as_secs_f64()),
            detail: None,
        }
    }

    /// One line per service: how it ended and how long its stop took.
    pub fn summary(&self) -> Vec<String> {
        self.svcs
            .values()
            .filter(|s| s.status != Status::Retired)
            .map(summary_line)
            .collect()
    }

    /// Why the launcher exits, for the termination report.
    pub fn termination(&self) -> crate::error::Termination {
        let svc = |name: &str| {
            self.svcs
                .values()
                .find(|s| s.name() == name && s.status != Status::Retired)
        };
        let (reason, subject) = match self.stop.active.as_ref().map(|st| &st.cause) {
            // The status is then the main command's: named with how it
            // ended (`exit 129: stopped on request (TERM) (main: killed
            // by HUP)`), else a 129 after a TERM reads as a mistake.
            Some(Cause::Requested(by)) => (
                format!("stopped on request ({by})"),
                self.decided
                    .is_none()
                    .then(|| self.svcs.values().find(|s| s.spec.main))
                    .flatten()
                    .filter(|_| self.main_exit.is_some())
                    .map(|s| s.name().to_string()),
            ),
            Some(Cause::MainEnded) => (
                "the main command ended".to_string(),
                Some("main".to_string()),
            ),
            Some(Cause::CriticalEnded(n)) => {
                ("critical service ended".to_string(), Some(n.clone()))
            }
            Some(Cause::CriticalFailed(n, why)) => {
                (format!("critical service FAILED: {why}"), Some(n.clone()))
            }
            Some(Cause::AllEnded { failed }) if failed.is_empty() => {
                ("every service ended".to_string(), None)
            }
            Some(Cause::AllEnded { failed }) => (
                format!("every service ended; FAILED: {}", failed.join(", ")),
                failed.first().cloned(),
            ),
            None => ("ended".to_string(), None),
        };
        let mut t = crate::error::Termination {
            reason,
            status: self.outcome(),
            ..Default::default()
        };
        if let Some(s) = subject.as_deref().and_then(svc) {
            // How it ended, or why a main command never ran (`cannot run
            // typo: …`; a FAILED critical service's reason is said above).
            let main_ended = matches!(
                self.stop.active.as_ref().map(|st| &st.cause),
                Some(Cause::MainEnded)
            );
            t.how = s
                .procs
                .iter()
                .filter_map(|p| p.m.last_exit)
                .next_back()
                .map(|e| e.to_string())
                .or_else(|| {
                    s.procs.iter().find_map(|p| match &p.m.state {
                        State::Failed { reason } if main_ended => Some(reason.clone()),
                        _ => None,
                    })
                });
            t.oom = s.facts.last_oom;
            t.restarts = s.procs.iter().map(|p| p.m.restarts).sum();
        }
        t.subject = subject;
        t
    }
}

/// `ctl status NAME`'s view of a service: its definition's facts and its
/// probes. Input paths only, never a value. The shell adds the stderr tail.
fn detail(s: &Svc) -> ServiceDetail {
    let spec = &s.spec;
    let shown = |list: &[(String, std::path::PathBuf)]| -> Vec<String> {
        list.iter()
            .map(|(k, p)| format!("{k}: {}", p.display()))
            .collect()
    };
    let mut probes = Vec::new();
    if let Some(r) = &spec.ready {
        let now = s.readiness.as_ref();
        probes.push(ProbeState {
            kind: "ready".into(),
            check: r.check.to_string(),
            failures: now.map_or(0, |x| x.failures),
            ok: Some(now.is_some_and(|x| x.ok)),
        });
    }
    if let Some(l) = &spec.live {
        probes.push(ProbeState {
            kind: "live".into(),
            check: l.check.to_string(),
            failures: s.liveness.as_ref().map_or(0, |x| x.failures),
            ok: None,
        });
    }
    ServiceDetail {
        command: spec.argv.clone(),
        user: spec
            .user
            .clone()
            .or_else(|| spec.uid.map(|u| u.to_string())),
        working_dir: spec.working_dir.as_ref().map(|d| d.display().to_string()),
        probes,
        env_files: spec
            .inputs
            .env_file
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        secrets: shown(&spec.inputs.secrets),
        credentials: shown(&spec.inputs.credentials),
        stderr_tail: Vec::new(),
    }
}

/// Whether a command is carried out once the launcher is stopping (the
/// others are refused: "the launcher is stopping").
fn answered_while_stopping(cmd: &Command) -> bool {
    match cmd {
        Command::Status { .. }
        | Command::Health { .. }
        | Command::Metrics {}
        | Command::Logs { .. }
        | Command::Reload {}
        | Command::Quit {} => true,
        Command::Start { .. }
        | Command::Stop { .. }
        | Command::Restart { .. }
        | Command::Signal { .. }
        | Command::Incr { .. }
        | Command::Decr { .. }
        | Command::Reconfigure {} => false,
    }
}

fn summary_line(s: &Svc) -> String {
    let mut parts: Vec<String> = Vec::new();
    for p in s.active() {
        let text = match &p.m.state {
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
    let restarts: u32 = s.procs.iter().map(|p| p.m.restarts).sum();
    let mut line = format!("{}: {}", s.name(), parts.join("; "));
    if restarts > 0 {
        line.push_str(&format!(", {restarts} restarts"));
    }
    line
}
