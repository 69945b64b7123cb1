//! What happens to a service when one of its processes changes state:
//! the process machine's actions carried out, an end or a failed start
//! judged (respawn, backoff, FAILED, the critical rule). Part of the pure
//! core (`core.rs`).

use super::*;
use crate::error::Outcome;
use crate::proc::exit::Exit;
use crate::supervisor::machine::{Action, Event, Proc};
use crate::units::fmt_duration;
use nix::sys::signal::Signal;
use std::time::Instant;

impl Core {
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

    /// The machine of process `id`.
    pub(super) fn slot_of(&self, id: ProcId) -> Option<&crate::supervisor::machine::Proc> {
        let &(s, i) = self.where_is.get(&id)?;
        self.svcs.get(&s)?.procs.get(i).map(|p| &p.m)
    }

    /// A running process ended by itself and is being started again: the
    /// service's restart reason is `crash` (README "Control socket").
    pub(super) fn note_crash(&mut self, id: ProcId, was_running: bool) {
        let restarting = self.slot_of(id).is_some_and(|m| {
            matches!(
                m.state,
                crate::supervisor::machine::State::Backoff { .. }
                    | crate::supervisor::machine::State::Starting
            )
        });
        if !(was_running && restarting) {
            return;
        }
        if let Some(svc) = self
            .where_is
            .get(&id)
            .and_then(|(s, _)| self.svcs.get_mut(s))
        {
            svc.facts.restart_reason = Some("crash".into());
        }
    }

    pub(super) fn apply(
        &mut self,
        s: SvcId,
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
            Action::Signal(pid, signal) => {
                // An interactive main (a shell on a terminal) gets SIGHUP
                // first, as a closing terminal would: bash ignores TERM
                // but ends on HUP. Its stop signal follows (a server run
                // with -ti may take HUP as "reload").
                if svc.spec.main && self.main_on_tty && signal != Signal::SIGHUP {
                    fx.push(Effect::Signal {
                        pid,
                        signal: Signal::SIGHUP,
                        group: true,
                    });
                }
                fx.push(Effect::Signal {
                    pid,
                    signal,
                    group: true,
                })
            }
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
            Action::Retry { at, reason } => log::warn!(
                "{}: not started: {reason}; retrying in {}",
                label(&svc.spec, i),
                fmt_duration(at.saturating_duration_since(now))
            ),
            Action::Ended(exit) => self.on_ended(s, exit, now, fx),
            Action::Failed(reason) => self.on_failed(s, reason, now, fx),
        }
    }

    pub(super) fn on_ended(
        &mut self,
        s: SvcId,
        exit: Option<Exit>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(svc) = self.svcs.get(&s) else {
            return;
        };
        if svc.job.is_some() {
            self.job_ended(s, Ok(exit), now, fx);
            return;
        }
        if svc.status == Status::Retired {
            return;
        }
        if svc.role == Role::Step {
            self.step_ended(s, Ok(exit), now, fx);
            return;
        }
        let (main, critical, name) = (svc.spec.main, svc.spec.critical, svc.name().to_string());
        if self.stop.active.is_none() {
            if let Some(e) = exit {
                log::info!("{name}: ended ({e})");
            }
        }
        if main {
            if let Some(e) = exit {
                self.main_exit = Some(e.outcome());
            }
            self.begin_stop(None, Cause::MainEnded, now, fx);
        } else if critical && self.stop.active.is_none() {
            log::error!("{name}: critical service ended: stopping everything");
            self.begin_stop(
                Some(exit.map_or(Outcome::CriticalGaveUp, Exit::outcome)),
                Cause::CriticalEnded(name),
                now,
                fx,
            );
        }
    }

    pub(super) fn on_failed(
        &mut self,
        s: SvcId,
        reason: String,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        if svc.job.is_some() {
            log::error!("{}: the run could not start: {reason}", svc.name());
            self.job_ended(s, Err(reason), now, fx);
            return;
        }
        if svc.role == Role::Step {
            self.step_ended(s, Err(reason), now, fx);
            return;
        }
        log::error!("{}: FAILED: {reason}", svc.name());
        if !matches!(svc.status, Status::Failed(_)) {
            svc.status = Status::Failed(reason);
        }
        let (main, critical) = (svc.spec.main, svc.spec.critical);
        let name = svc.name().to_string();
        let why = match &svc.status {
            Status::Failed(r) => r.clone(),
            _ => String::new(),
        };
        if main {
            self.main_exit.get_or_insert(Outcome::Failed);
            self.begin_stop(None, Cause::MainEnded, now, fx);
        } else if critical {
            self.begin_stop(
                Some(Outcome::CriticalGaveUp),
                Cause::CriticalFailed(name, why),
                now,
                fx,
            );
        }
    }

    /// The processes of service `s` that `keep` selects; with `within_scale`
    /// only those it should run now (not the extra ones after a `decr`).
    pub(super) fn proc_ids(
        &self,
        s: SvcId,
        within_scale: bool,
        keep: impl Fn(&Proc) -> bool,
    ) -> Vec<ProcId> {
        self.svcs
            .get(&s)
            .map(|x| {
                let n = if within_scale { x.scale } else { x.procs.len() };
                x.procs
                    .iter()
                    .take(n)
                    .filter(|p| keep(&p.m))
                    .map(|p| p.id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Send `ev` to every process of service `s`.
    pub(super) fn svc_event(&mut self, s: SvcId, ev: &Event, now: Instant, fx: &mut Vec<Effect>) {
        for id in self.proc_ids(s, false, |_| true) {
            self.proc_event(id, ev.clone(), now, fx);
        }
    }
}
