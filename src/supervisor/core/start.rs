//! Starting: who may start now (dependencies up, warm-up over), in
//! batches; and noticing when nothing is left to supervise.

use super::*;
use crate::error::Outcome;
use crate::supervisor::machine::{Event, State};
use crate::supervisor::plan::{self, Node};
use std::time::Instant;

/// The most processes one service runs (as `numprocesses` allows).
pub(super) const MAX_PROCESSES: usize = 10_000;

impl Core {
    /// After every input: continue the stop, or start what can start and
    /// notice when nothing is left to supervise.
    pub(super) fn settle(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.stop.active.is_none() {
            self.settle_jobs(now, fx);
            self.pump_starts(now, fx);
            self.start_due_probes(now, fx);
            self.check_all_done(now, fx);
            self.maybe_tell_ready(fx);
        }
        // Forget retired services once they are down.
        self.svcs.retain(|_, s| {
            !(s.status == Status::Retired && !s.has_live_process() && !s.probe_running())
        });
        let live: std::collections::HashSet<SvcId> = self.svcs.keys().copied().collect();
        self.where_is.retain(|_, (s, _)| live.contains(s));
        if self.stop.active.is_some() {
            self.advance_stop(now, fx);
            let hooks = self
                .stop
                .active
                .as_ref()
                .is_some_and(|st| !st.hooks.is_empty());
            let done = !hooks
                && !self
                    .svcs
                    .values()
                    .any(|s| s.has_live_process() || s.probe_running());
            if done && !self.exited {
                self.exited = true;
                fx.push(Effect::Exit(self.outcome()));
            }
        }
    }

    pub(super) fn start_order(&self) -> Vec<SvcId> {
        let ids: Vec<SvcId> = self
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

    pub(super) fn pump_starts(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.warmup_until.is_some_and(|w| w > now) {
            return;
        }
        let mut budget = SPAWN_BATCH;
        for s in self.start_order() {
            if self.stop.active.is_some() || budget == 0 {
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
            let old_live = self.svcs.values().any(|o| {
                o.status == Status::Retired && o.has_live_process() && o.name() == svc.name()
            });
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
    pub(super) fn begin_service(&mut self, s: SvcId, now: Instant) {
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        svc.status = Status::Started;
        svc.readiness = Core::arm_readiness(&svc.spec, now);
        self.arm_step(s, now);
    }

    /// Start the idle processes of a started service, within `budget`.
    pub(super) fn fill(
        &mut self,
        s: SvcId,
        mut budget: usize,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) -> usize {
        let idle = self.proc_ids(s, true, |p| p.state == State::Idle);
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
    pub(super) fn start_procs(&mut self, s: SvcId, now: Instant, fx: &mut Vec<Effect>) {
        for id in self.proc_ids(s, true, |_| true) {
            self.proc_event(id, Event::Start, now, fx);
        }
    }

    /// One more process (`ctl incr`), up to the config's own limit.
    pub(super) fn grow(&mut self, s: SvcId) -> Option<usize> {
        let (len, scale) = self.svcs.get(&s).map(|x| (x.procs.len(), x.scale))?;
        if scale >= MAX_PROCESSES {
            return None;
        }
        if len <= scale {
            let slot = self.new_slot(s, len);
            self.svcs.get_mut(&s)?.procs.push(slot);
        }
        let svc = self.svcs.get_mut(&s)?;
        svc.scale += 1;
        Some(svc.scale)
    }

    pub(super) fn check_all_done(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let waiting = self.svcs.values().any(|s| {
            s.has_live_process()
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
        let failed: Vec<String> = self
            .svcs
            .values()
            .filter(|s| matches!(s.status, Status::Failed(_)))
            .map(|s| s.name().to_string())
            .collect();
        if self.svcs.values().all(|s| s.status == Status::Retired) {
            log::info!("nothing to supervise");
        } else {
            log::info!("every service has ended");
        }
        let outcome = if failed.is_empty() {
            Outcome::Done
        } else {
            Outcome::Failed
        };
        self.begin_stop(Some(outcome), Cause::AllEnded { failed }, now, fx);
    }
}
