//! Stopping (README "Stopping"): one deadline for the whole stop; a
//! service gets its stop signal once everything that runs after it has
//! exited; SIGKILL for what is left at the deadline.

use super::*;
use crate::config::model::Service;
use crate::supervisor::machine::{Event, State};
use crate::supervisor::plan::{self, Node};
use crate::units::fmt_duration;
use std::time::{Duration, Instant};

impl Core {
    /// Start the graceful stop, for `cause`. `outcome` decides the exit
    /// status unless an earlier cause already did.
    pub(super) fn begin_stop(
        &mut self,
        outcome: Option<Outcome>,
        cause: Cause,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if let Some(o) = outcome {
            self.decided.get_or_insert(o);
        }
        if self.stop.active.is_some() {
            return;
        }
        let deadline = now + self.stop.timeout;
        // Only a stop asked from outside drains: a main command that ended
        // has nobody left to drain for.
        let drain_for = match cause {
            Cause::Requested(_) => self.stop.drain,
            _ => Duration::ZERO,
        };
        let mut hooks = std::collections::HashSet::new();
        let with_hooks: Vec<(std::sync::Arc<Service>, Vec<String>, Duration)> = self
            .svcs
            .values()
            .filter(|s| s.has_live_process() && s.status != Status::Retired && s.role != Role::Step)
            .filter_map(|s| {
                let h = s.spec.pre_stop.as_ref()?;
                Some((s.spec.clone(), h.argv.clone(), h.timeout))
            })
            .collect();
        for (spec, argv, timeout) in with_hooks {
            let probe = ProbeId(self.next_probe);
            self.next_probe += 1;
            hooks.insert(probe);
            log::info!("{}: pre_stop", spec.name);
            fx.push(Effect::Hook {
                probe,
                spec,
                argv,
                timeout: timeout.min(self.stop.timeout),
            });
        }
        self.stop.active = Some(Stopping {
            cause,
            deadline,
            killed: false,
            hooks,
            drain_for,
            drain_until: None,
            drained: false,
        });
        self.abandon_reconfigure(fx);
        fx.push(Effect::StopBegan);
        if self.own.notify {
            fx.push(Effect::Notify("STOPPING=1".into()));
        }
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

    /// A pre_stop hook ended (`probe` is its id): true if it was one.
    pub(super) fn hook_done(&mut self, probe: ProbeId, ok: bool, now: Instant) -> bool {
        let Some(st) = self.stop.active.as_mut() else {
            return false;
        };
        if !st.hooks.remove(&probe) {
            return false;
        }
        if !ok {
            log::warn!("a pre_stop hook failed or timed out");
        }
        let _ = now;
        true
    }

    /// Still draining: pre_stop hooks running, or the drain wait not over.
    fn draining(&mut self, now: Instant) -> bool {
        let Some(st) = self.stop.active.as_mut() else {
            return false;
        };
        if st.killed {
            return false;
        }
        if !st.hooks.is_empty() {
            return true;
        }
        if st.drained {
            return false;
        }
        let until = *st.drain_until.get_or_insert_with(|| {
            if !st.drain_for.is_zero() {
                log::info!("draining for {}", fmt_duration(st.drain_for));
            }
            now + st.drain_for
        });
        if now < until.min(st.deadline) {
            return true;
        }
        st.drained = true;
        false
    }

    /// When the drain wait ends (a deadline for the loop).
    pub(super) fn drain_deadline(&self) -> Option<Instant> {
        self.stop
            .active
            .as_ref()
            .filter(|st| !st.killed && !st.drained && st.hooks.is_empty())
            .and_then(|st| st.drain_until)
    }

    /// When what is left is killed: the stop's deadline, until it is.
    pub(super) fn kill_deadline(&self) -> Option<Instant> {
        self.stop
            .active
            .as_ref()
            .filter(|st| !st.killed)
            .map(|st| st.deadline)
    }

    pub(super) fn cancel_probes(&mut self, fx: &mut Vec<Effect>) {
        for svc in self.svcs.values_mut() {
            if let Some(r) = &mut svc.readiness {
                if let Some(p) = r.running.take() {
                    fx.push(Effect::CancelProbe(p));
                }
                r.next_at = None;
            }
            if let Some(l) = &mut svc.liveness {
                if let Some(p) = l.running.take() {
                    fx.push(Effect::CancelProbe(p));
                }
                l.next_at = None;
            }
        }
    }

    /// Signal every live service whose waits (README "Stopping") are over.
    pub(super) fn advance_stop(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.draining(now) {
            return;
        }
        let ids: Vec<SvcId> = self.svcs.keys().copied().collect();
        let nodes: Vec<Node> = ids
            .iter()
            .filter_map(|id| self.svcs.get(id).map(|s| Node::of(&s.spec)))
            .collect();
        let live: Vec<bool> = ids
            .iter()
            .map(|id| self.svcs.get(id).is_some_and(Svc::has_live_process))
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

    pub(super) fn kill_all(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if let Some(st) = &mut self.stop.active {
            st.killed = true;
            for h in st.hooks.drain() {
                fx.push(Effect::CancelProbe(h));
            }
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
}
