//! Live reconfigure (README "Live reconfigure"), pure: a request (the
//! watch, `ctl reconfigure`) becomes an `Effect::Reconfigure`; the shell
//! validates, installs the pillar and renders the templates inline (they
//! are bounded) and answers `Prepared`; the `salt`/`command` steps then run
//! here, one after the other, as children of the one loop (never a second
//! reaper), each under its timeout; only when every step succeeded and
//! something changed are the services touched, each by `on_reconfigure`.

use super::*;
use crate::config::model::OnReconfigure;
use crate::ctl::proto::{ReconfigureState, Reply};
use crate::supervisor::machine::Event;
use nix::sys::signal::Signal;
use std::collections::VecDeque;
use std::time::Instant;

impl Core {
    /// A reconfigure is asked for: now, or after the one that runs.
    pub(super) fn request_reconfigure(&mut self, conn: Option<ConnId>, fx: &mut Vec<Effect>) {
        if !self.reconf.enabled || self.stop.active.is_some() {
            if let Some(conn) = conn {
                fx.push(Effect::Reply {
                    conn,
                    reply: Reply::error("no live reconfigure now"),
                });
            }
            return;
        }
        if self.reconf.run.is_some() {
            // Inputs changed again meanwhile: one more round afterwards
            // sees them (however many changes came).
            let waiting = self.reconf.again.get_or_insert_with(Vec::new);
            waiting.extend(conn);
            return;
        }
        self.reconf.run = Some(ReconfRun {
            conns: conn.into_iter().collect(),
            changed: Vec::new(),
            retry: self.reconf.retry,
            steps: VecDeque::new(),
            running: None,
            ran: Vec::new(),
        });
        fx.push(Effect::Reconfigure {
            conn,
            retry: self.reconf.retry,
        });
    }

    /// The shell's part is done: run the process steps, or finish.
    pub(super) fn prepared(
        &mut self,
        _conn: Option<ConnId>,
        result: Prepared,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if self.reconf.run.is_none() {
            return;
        }
        match result {
            Prepared::Invalid(e) => self.reconf_done(Err(("invalid", e)), now, fx),
            Prepared::Failed(e) => self.reconf_done(Err(("failed", e)), now, fx),
            Prepared::Ready { changed, steps } => {
                // The pillar the volume says is installed now.
                self.pillar = None;
                if let Some(r) = &mut self.reconf.run {
                    r.changed = changed;
                    r.steps = steps.into();
                }
                self.next_step(now, fx);
            }
        }
    }

    /// Start the next process step, or finish when none is left.
    fn next_step(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let Some(job) = self.reconf.run.as_mut().and_then(|r| r.steps.pop_front()) else {
            self.reconf_done(Ok(()), now, fx);
            return;
        };
        log::info!("reconfigure: {} …", job.name);
        let id = self.add_step(&job, false);
        if let Some(r) = &mut self.reconf.run {
            r.running = Some((id, job.name.clone()));
        }
        // pump_starts (in settle) starts it: it has no dependency.
    }

    /// A step of the reconfigure ended: the next one, or the end.
    pub(super) fn reconfigure_step_ended(
        &mut self,
        s: SvcId,
        end: Result<(), String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = &mut self.reconf.run else {
            return;
        };
        // Only the step that runs moves the reconfigure on.
        if r.running.as_ref().is_none_or(|(id, _)| *id != s) {
            return;
        }
        let Some((_, name)) = r.running.take() else {
            return;
        };
        match end {
            Ok(()) => {
                log::info!("reconfigure: {name} done");
                r.ran.push(name);
                self.next_step(now, fx);
            }
            Err(why) => self.reconf_done(Err(("failed", format!("{name}: {why}"))), now, fx),
        }
    }

    /// The end of a reconfigure: count it, show it, act on the services
    /// when it succeeded and changed something, answer who asked.
    fn reconf_done(
        &mut self,
        result: Result<(), (&str, String)>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = self.reconf.run.take() else {
            return;
        };
        let (state, reply) = match result {
            Err((kind, error)) => {
                if kind == "invalid" {
                    self.reconf.counts.invalid += 1;
                    log::error!("reconfigure: invalid input, nothing changed: {error}");
                } else {
                    self.reconf.counts.failed += 1;
                    // Its steps run again at the next change.
                    self.reconf.retry = true;
                    log::error!(
                        "reconfigure: {error}; the services keep running as they are (retried at the next change)"
                    );
                }
                let state = ReconfigureState {
                    last: kind.to_string(),
                    error: Some(error.clone()),
                    message: None,
                };
                (state, Reply::error(format!("reconfigure {kind}: {error}")))
            }
            Ok(()) => {
                self.reconf.counts.ok += 1;
                self.reconf.retry = false;
                // Only a step that changed an output touches the services:
                // a pillar change that renders the same is no change.
                let message = if r.changed.is_empty() && r.ran.is_empty() && !r.retry {
                    "nothing changed: services untouched".to_string()
                } else {
                    let touched = self.act_on_services(now, fx);
                    let mut parts = Vec::new();
                    if !r.changed.is_empty() {
                        parts.push(format!("rendered: {}", r.changed.join(", ")));
                    }
                    if !r.ran.is_empty() {
                        parts.push(format!("ran: {}", r.ran.join(", ")));
                    }
                    if r.retry {
                        parts.push("retried the last failed reconfigure".into());
                    }
                    let mut m = parts.join("; ");
                    m.push_str(&format!(
                        "; {}",
                        if touched.is_empty() {
                            "no service to touch".to_string()
                        } else {
                            touched.join(", ")
                        }
                    ));
                    m
                };
                log::info!("reconfigure: {message}");
                let state = ReconfigureState {
                    last: "ok".into(),
                    error: None,
                    message: Some(message.clone()),
                };
                (state, Reply::ok(format!("reconfigured: {message}")))
            }
        };
        self.reconf.last = Some(state);
        for conn in r.conns {
            fx.push(Effect::Reply {
                conn,
                reply: reply.clone(),
            });
        }
        // Asked again while this one ran: once more, for everyone waiting.
        if let Some(waiting) = self.reconf.again.take() {
            let mut first = waiting.first().copied();
            self.request_reconfigure(first.take(), fx);
            if let Some(live) = &mut self.reconf.run {
                live.conns.extend(waiting.into_iter().skip(1));
            }
        }
    }

    /// Restart or reload each service of the config by its
    /// `on_reconfigure`; the launcher's sshd and the main command are
    /// never touched. Returns what was done, for the message.
    fn act_on_services(&mut self, now: Instant, fx: &mut Vec<Effect>) -> Vec<String> {
        let targets: Vec<(SvcId, String, OnReconfigure, Signal)> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.role == Role::Config && s.status == Status::Started)
            .map(|(&id, s)| {
                (
                    id,
                    s.name().to_string(),
                    s.spec.on_reconfigure,
                    s.spec.reload_signal,
                )
            })
            .collect();
        let mut done = Vec::new();
        for (s, name, on, sig) in targets {
            match on {
                OnReconfigure::None => {}
                OnReconfigure::Restart => {
                    let live = self.proc_ids(s, true, |p| p.is_live());
                    if live.is_empty() {
                        continue;
                    }
                    if let Some(svc) = self.svcs.get_mut(&s) {
                        svc.facts.restart_reason = Some("reconfigure".into());
                    }
                    for id in live {
                        self.proc_event(id, Event::Restart, now, fx);
                    }
                    done.push(format!("restarted {name}"));
                }
                OnReconfigure::Reload => {
                    let pids: Vec<i32> = self
                        .svcs
                        .get(&s)
                        .map(|x| x.procs.iter().filter_map(|p| p.m.pid()).collect())
                        .unwrap_or_default();
                    if pids.is_empty() {
                        continue;
                    }
                    for pid in pids {
                        fx.push(Effect::Signal {
                            pid,
                            signal: sig,
                            group: true,
                        });
                    }
                    done.push(format!(
                        "reloaded {name} ({})",
                        crate::signals::short_name(sig)
                    ));
                }
            }
        }
        done
    }

    /// A stop began: a reconfigure in progress is abandoned (its step is
    /// stopped with everything else).
    pub(super) fn abandon_reconfigure(&mut self, fx: &mut Vec<Effect>) {
        self.reconf.again = None;
        if let Some(r) = self.reconf.run.take() {
            for conn in r.conns {
                fx.push(Effect::Reply {
                    conn,
                    reply: Reply::error("the launcher is stopping"),
                });
            }
        }
    }
}
