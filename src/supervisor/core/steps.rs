//! Steps (README "The prepare phase", "Live reconfigure"), pure: a one-shot
//! child run to its end — a prepare step run alone through this loop, or a
//! `salt`/`command` step of a live reconfigure. One rule for every step:
//! the core owns its timeout (a deadline: TERM, then KILL after
//! `STEP_GRACE`) and its end (a `JobEnd`); when its process ends, whatever
//! it left in its process group is killed.

use super::*;
use crate::config::model::{OnReconfigure, Service, Stream};
use crate::proc::exit::Exit;
use crate::proc::{Job, JobEnd};
use crate::supervisor::machine::Event;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// The service that runs a step: one process, never respawned, its output
/// prefixed by the step's name.
pub fn step_service(job: &Job) -> Service {
    let mut spec = Service::new(&job.name, job.argv.clone());
    spec.respawn = false;
    spec.max_retry = Some(0);
    spec.min_uptime = Duration::ZERO;
    spec.stdout = Stream::Prefix;
    spec.stderr = Stream::Prefix;
    spec.graceful_timeout = STEP_GRACE;
    spec.env = job.env.iter().cloned().collect();
    spec.on_reconfigure = OnReconfigure::None;
    spec
}

impl Core {
    /// Add `job` as a step service (not started yet: `pump_starts` starts
    /// it, it has no dependency); its id.
    pub(super) fn add_step(&mut self, job: &Job, alone: bool) -> SvcId {
        let id = self.next_svc;
        self.add(step_service(job), Role::Step);
        if let Some(svc) = self.svcs.get_mut(&id) {
            svc.step = Some(StepRun {
                alone,
                timeout: job.timeout,
                ..StepRun::default()
            });
        }
        id
    }

    /// A step starts: its timeout runs from now.
    pub(super) fn arm_step(&mut self, s: SvcId, now: Instant) {
        if let Some(st) = self.svcs.get_mut(&s).and_then(|x| x.step.as_mut()) {
            st.deadline = st.timeout.map(|t| now + t);
        }
    }

    /// Whether the run is one step alone (a prepare step).
    pub(super) fn step_alone(&self) -> bool {
        self.svcs
            .values()
            .any(|s| s.step.as_ref().is_some_and(|st| st.alone))
    }

    /// A stop signal during a step run alone: remembered for its end.
    pub(super) fn step_interrupted(&mut self, sig: Signal) {
        for st in self.svcs.values_mut().filter_map(|s| s.step.as_mut()) {
            if st.alone && st.interrupted.is_none() {
                st.interrupted = Some(sig);
            }
        }
    }

    /// The earliest step timeout.
    pub(super) fn step_deadlines(&self) -> Option<Instant> {
        self.svcs
            .values()
            .filter_map(|s| s.step.as_ref()?.deadline)
            .min()
    }

    /// A step past its timeout is stopped (TERM, then KILL after a grace).
    pub(super) fn step_timeouts(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let due: Vec<(SvcId, String, bool)> = self
            .svcs
            .iter_mut()
            .filter_map(|(&id, s)| {
                let st = s.step.as_mut()?;
                if st.deadline.is_none_or(|d| d > now) {
                    return None;
                }
                st.deadline = None;
                st.timed_out = true;
                Some((id, s.spec.name.clone(), st.alone))
            })
            .collect();
        for (s, name, alone) in due {
            if alone {
                log::warn!("{name}: timed out: stopping the step");
            } else {
                log::warn!("reconfigure: {name}: timed out: stopping the step");
            }
            self.svc_event(s, &Event::Stop, now, fx);
        }
    }

    /// A step's process ended: nothing it started in its group outlives it.
    pub(super) fn step_exited(&self, proc: ProcId, pid: i32, fx: &mut Vec<Effect>) {
        if self.svc_of(proc).is_some_and(|s| s.role == Role::Step) {
            fx.push(Effect::Signal {
                pid,
                signal: Signal::SIGKILL,
                group: true,
            });
        }
    }

    /// A step ended (`Ok`: its exit, if it ran; `Err`: why it could not
    /// start): alone, that ends the run; else the reconfigure moves on.
    pub(super) fn step_ended(
        &mut self,
        s: SvcId,
        end: Result<Option<Exit>, String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        let Some(st) = svc.step.as_mut() else { return };
        st.deadline = None;
        let st = st.clone();
        if !st.alone {
            // Forgotten once down (a run alone keeps it to its end).
            svc.status = Status::Retired;
        }
        let end = match (st.timed_out, st.interrupted, end) {
            (true, _, _) => JobEnd::TimedOut,
            (_, Some(sig), _) => JobEnd::Interrupted(sig),
            (_, _, Err(why)) => JobEnd::NotStarted(why),
            (_, _, Ok(Some(exit))) => JobEnd::Exited(exit),
            (_, _, Ok(None)) => JobEnd::NotStarted("ended without an exit status".into()),
        };
        if st.alone {
            fx.push(Effect::StepEnded {
                name: svc.name().to_string(),
                end,
            });
            self.begin_stop(None, Cause::MainEnded, now, fx);
            return;
        }
        let end = match end {
            JobEnd::Exited(Exit::Code(0)) => Ok(()),
            JobEnd::Exited(e) => Err(e.to_string()),
            JobEnd::TimedOut => Err(format!(
                "timed out after {}",
                crate::units::fmt_duration(st.timeout.unwrap_or_default())
            )),
            JobEnd::Interrupted(sig) => {
                Err(format!("interrupted ({})", crate::signals::short_name(sig)))
            }
            JobEnd::NotStarted(why) => Err(why),
        };
        self.reconfigure_step_ended(s, end, now, fx);
    }
}
