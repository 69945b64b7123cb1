//! Scheduled jobs and file watches (README "Scheduled jobs", "File
//! watches"), pure. A job's due run is a deadline of the core
//! (`next_deadline`): the loop sleeps until then, 0 wake-ups between runs.
//! A run pauses the services it names (their usual stop), spawns the job
//! once they are down, stops it at its timeout, counts how it ended and
//! starts the paused services again. A run that falls due while the
//! previous one still runs is skipped and counted. A watched file's change
//! (`Input::PathsChanged`) is debounced here, then reloads or restarts
//! that one service.

use super::*;
use crate::config::model::{OnChange, Service, When};
use crate::ctl::proto::JobState;
use crate::proc::exit::Exit;
use crate::supervisor::machine::Event;
use crate::units::fmt_duration;
use std::time::Instant;

/// A wall clock that is off by more than this from where the monotonic
/// deadline lands (a clock set back, a suspend) is believed.
const CLOCK_SLACK: f64 = 0.5;

impl Core {
    /// The wall clock at `now` (seconds since the epoch), from the anchor
    /// the last input's `Now` gave; cron times are wall times.
    pub(super) fn wall_at(&self, now: Instant) -> f64 {
        match self.wall {
            Some((at, unix)) if now >= at => unix + now.duration_since(at).as_secs_f64(),
            Some((at, unix)) => unix - at.duration_since(now).as_secs_f64(),
            None => 0.0,
        }
    }

    /// The run after one due at `due` (`now` is when it is handled; a
    /// cron run comes after the wall time `after_wall` too: the one due
    /// may be a hair ahead of the wall clock).
    fn following(
        spec: &Service,
        due: Instant,
        now: Instant,
        wall_now: f64,
        after_wall: f64,
    ) -> Option<(Instant, f64)> {
        let sched = spec.schedule.as_ref()?;
        match &sched.when {
            When::Reboot => None,
            When::Every(every) => {
                let mut next = due + *every;
                if next <= now {
                    // Asleep past several periods: the next one still to come.
                    let behind = now.duration_since(next).as_secs_f64();
                    let periods = (behind / every.as_secs_f64()).floor() + 1.0;
                    next += every.mul_f64(periods);
                }
                let wall = wall_now + next.saturating_duration_since(now).as_secs_f64();
                Some((next, wall))
            }
            When::Cron { cron, tz, .. } => {
                let t = cron.next_after(tz, after_wall.max(wall_now).floor() as i64)? as f64;
                let wait = crate::units::duration_from_secs((t - wall_now).max(0.0))?;
                Some((now + wait, t))
            }
        }
    }

    /// After every input: arm new jobs, start the runs that are due (or
    /// count them skipped), spawn a run whose paused services are down,
    /// stop a run past its timeout; act on debounced watch changes.
    pub(super) fn settle_jobs(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        if self.stop.active.is_some() {
            return;
        }
        let wall_now = self.wall_at(now);
        let ids: Vec<SvcId> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.job.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if self
                .svcs
                .get(&id)
                .is_some_and(|s| s.status == Status::Retired)
            {
                // Removed or replaced by a reload before its process was
                // spawned: the run is over, what it paused comes back.
                self.cancel_run(id, now, fx);
            } else {
                self.settle_job(id, now, wall_now, fx);
            }
        }
        self.fire_watches(now, fx);
    }

    fn settle_job(&mut self, id: SvcId, now: Instant, wall_now: f64, fx: &mut Vec<Effect>) {
        let Some(svc) = self.svcs.get_mut(&id) else {
            return;
        };
        let spec = svc.spec.clone();
        let Some(job) = svc.job.as_mut() else { return };
        let name = spec.name.clone();
        if !job.armed {
            job.armed = true;
            let first = spec
                .schedule
                .as_ref()
                .is_some_and(|s| s.run_on_start || s.when == When::Reboot);
            if !spec.autostart {
                // Only `ctl start` runs it.
            } else if first {
                job.next_at = Some(now);
                job.next_wall = Some(wall_now);
            } else {
                // The first `every` run comes one period after the start.
                let after = Core::following(&spec, now, now, wall_now, wall_now);
                (job.next_at, job.next_wall) = (after.map(|a| a.0), after.map(|a| a.1));
            }
            // A run due now says `run started` at once, and its end the
            // next time (not `next run at` the very moment it starts).
            if let Some(w) = job.next_wall.filter(|_| !first) {
                log::info!("{name}: next run at {}", crate::cron::rfc3339(w as i64));
            }
        }
        let is_cron = matches!(
            spec.schedule.as_ref().map(|s| &s.when),
            Some(When::Cron { .. })
        );
        // A cron time is a wall time: due when the wall clock says so
        // even if the monotonic deadline is still ahead (a clock moved on).
        let wall_due = is_cron && job.next_wall.is_some_and(|w| w <= wall_now);
        let due = job
            .next_at
            .filter(|&at| at <= now)
            .or_else(|| wall_due.then_some(now));
        if let Some(due) = due {
            // A clock set back since the deadline was computed means it is
            // not time yet.
            let early = job
                .next_wall
                .filter(|w| is_cron && *w - wall_now > CLOCK_SLACK);
            if let Some(w) = early {
                job.next_at = crate::units::duration_from_secs(w - wall_now).map(|d| now + d);
            } else {
                let due_wall = job.next_wall.unwrap_or(wall_now);
                let next = Core::following(&spec, due, now, wall_now, due_wall);
                job.next_at = next.map(|n| n.0);
                job.next_wall = next.map(|n| n.1);
                if job.run.is_some() {
                    job.counts.skipped += 1;
                    log::warn!("{name}: run due now skipped: the previous run is still going");
                } else {
                    self.begin_run(id, now, fx);
                }
            }
        }
        self.advance_run(id, now, fx);
    }

    /// Start a run: stop the services it pauses; it spawns once they are down.
    pub(super) fn begin_run(&mut self, id: SvcId, now: Instant, fx: &mut Vec<Effect>) {
        let Some(spec) = self.svcs.get(&id).map(|s| s.spec.clone()) else {
            return;
        };
        let wall_now = self.wall_at(now);
        let pause: Vec<String> = spec
            .schedule
            .as_ref()
            .map(|s| s.pause.clone())
            .unwrap_or_default();
        let mut paused = Vec::new();
        for p in pause {
            let Some(pid) = self.find(&p) else { continue };
            let Some(target) = self.svcs.get_mut(&pid) else {
                continue;
            };
            if target.status != Status::Started {
                continue;
            }
            target.status = Status::Manual;
            log::info!("{p}: stopping for the run of {}", spec.name);
            paused.push(p);
            self.svc_event(pid, &Event::Stop, now, fx);
        }
        if let Some(job) = self.svcs.get_mut(&id).and_then(|s| s.job.as_mut()) {
            job.last_run = Some(wall_now);
            job.run = Some(Run {
                paused,
                spawned: false,
                started: now,
                deadline: None,
                timed_out: false,
            });
        }
    }

    /// Spawn the job once what it paused is down; stop it at its timeout.
    fn advance_run(&mut self, id: SvcId, now: Instant, fx: &mut Vec<Effect>) {
        let Some(svc) = self.svcs.get(&id) else {
            return;
        };
        let spec = svc.spec.clone();
        let Some(run) = svc.job.as_ref().and_then(|j| j.run.as_ref()) else {
            return;
        };
        if !run.spawned {
            let waiting = run.paused.iter().any(|p| {
                self.svcs
                    .values()
                    .any(|s| s.name() == p.as_str() && s.has_live_process())
            });
            if waiting {
                return;
            }
            let timeout = spec.schedule.as_ref().and_then(|s| s.timeout);
            if let Some(run) = self.run_mut(id) {
                run.spawned = true;
                run.deadline = timeout.map(|t| now + t);
            }
            log::info!("{}: run started", spec.name);
            for p in self.proc_ids(id, true, |_| true) {
                self.proc_event(p, Event::Start, now, fx);
            }
            return;
        }
        if run.deadline.is_some_and(|d| d <= now) && !run.timed_out {
            if let Some(run) = self.run_mut(id) {
                run.timed_out = true;
            }
            let t = spec
                .schedule
                .as_ref()
                .and_then(|s| s.timeout)
                .unwrap_or_default();
            log::warn!(
                "{}: run timed out after {}: stopping it",
                spec.name,
                fmt_duration(t)
            );
            self.svc_event(id, &Event::Stop, now, fx);
        }
    }

    /// The run in progress of job `id`.
    fn run_mut(&mut self, id: SvcId) -> Option<&mut Run> {
        let job = self.svcs.get_mut(&id)?.job.as_mut()?;
        job.run.as_mut()
    }

    /// A job's process ended (`Ok`) or could not start (`Err`): count the
    /// run, start again what it paused. True if `s` is a job.
    pub(super) fn job_ended(
        &mut self,
        s: SvcId,
        end: Result<Option<Exit>, String>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) -> bool {
        let Some(svc) = self.svcs.get_mut(&s) else {
            return false;
        };
        let name = svc.spec.name.clone();
        let Some(job) = svc.job.as_mut() else {
            return false;
        };
        let Some(run) = job.run.take() else {
            return true;
        };
        let (result, how) = match (&end, run.timed_out) {
            (_, true) => (
                "timeout",
                end.as_ref().ok().copied().flatten().map(|e| e.to_string()),
            ),
            (Ok(Some(Exit::Code(0))), _) => ("ok", Some("exit 0".to_string())),
            (Ok(Some(e)), _) => ("failed", Some(e.to_string())),
            (Ok(None), _) => ("failed", Some("stopped".to_string())),
            (Err(why), _) => ("failed", Some(why.clone())),
        };
        match result {
            "ok" => job.counts.ok += 1,
            "timeout" => job.counts.timeout += 1,
            _ => job.counts.failed += 1,
        }
        job.last_result = Some(result);
        job.last_exit = how.clone();
        let took = fmt_duration(now.saturating_duration_since(run.started));
        let next = job
            .next_wall
            .map(|w| format!("; next run at {}", crate::cron::rfc3339(w as i64)))
            .unwrap_or_default();
        let how = how.unwrap_or_default();
        match result {
            "ok" => log::info!("{name}: run ended ({how}) after {took}{next}"),
            // Cut short by the launcher's own stop: no failure of the job's,
            // and no next run to promise.
            _ if self.stop.active.is_some() => {
                log::info!("{name}: run stopped ({how}) after {took}: the launcher is stopping")
            }
            _ => log::warn!("{name}: run {result} ({how}) after {took}{next}"),
        }
        if self.stop.active.is_none() {
            for p in run.paused {
                let Some(id) = self.find(&p) else { continue };
                // Still as the run left it (not started by hand meanwhile).
                let paused = self
                    .svcs
                    .get(&id)
                    .is_some_and(|x| x.status == Status::Manual);
                if paused {
                    log::info!("{p}: starting again after the run of {name}");
                    self.begin_service(id, now);
                    self.resume(id, now, fx);
                }
            }
        }
        true
    }

    /// Start the processes of a paused service again; one still stopping
    /// (a run cancelled early) starts again once it has ended.
    fn resume(&mut self, id: SvcId, now: Instant, fx: &mut Vec<Effect>) {
        let mut start = Vec::new();
        if let Some(svc) = self.svcs.get_mut(&id) {
            let n = svc.scale;
            for slot in svc.procs.iter_mut().take(n) {
                if matches!(
                    slot.m.state,
                    crate::supervisor::machine::State::Stopping { .. }
                ) {
                    slot.m.restart_on_end = true;
                } else {
                    start.push(slot.id);
                }
            }
        }
        for p in start {
            self.proc_event(p, Event::Start, now, fx);
        }
    }

    /// End a run whose process was not spawned yet (the services it
    /// pauses still stopping): counted as failed, what it paused restarted.
    fn cancel_run(&mut self, s: SvcId, now: Instant, fx: &mut Vec<Effect>) {
        let waiting = self
            .svcs
            .get(&s)
            .and_then(|x| x.job.as_ref())
            .and_then(|j| j.run.as_ref())
            .is_some_and(|r| !r.spawned);
        if waiting {
            self.job_ended(s, Err("stopped before it started".into()), now, fx);
        }
    }

    /// `ctl stop JOB`: the run in progress stops (its process, or the
    /// wait for what it pauses).
    pub(super) fn stop_run(&mut self, s: SvcId, now: Instant, fx: &mut Vec<Effect>) {
        self.cancel_run(s, now, fx);
        self.svc_event(s, &Event::Stop, now, fx);
    }

    /// `ctl start JOB` / `ctl restart JOB`: a run now, unless one is going.
    pub(super) fn run_now(
        &mut self,
        s: SvcId,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) -> Result<(), String> {
        let running = self
            .svcs
            .get(&s)
            .and_then(|x| x.job.as_ref())
            .is_some_and(|j| j.run.is_some());
        if running {
            return Err("a run is in progress".into());
        }
        self.begin_run(s, now, fx);
        self.advance_run(s, now, fx);
        Ok(())
    }

    /// The deadlines of jobs and watches, for `next_deadline`.
    pub(super) fn job_deadlines(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        for s in self.svcs.values().filter(|s| s.status != Status::Retired) {
            let run_deadline = s
                .job
                .as_ref()
                .and_then(|j| j.run.as_ref())
                .filter(|r| !r.timed_out)
                .and_then(|r| r.deadline);
            let next = s.job.as_ref().and_then(|j| j.next_at);
            for t in [run_deadline, next, s.watch_due].into_iter().flatten() {
                at = Some(at.map_or(t, |a: Instant| a.min(t)));
            }
        }
        at
    }

    /// A watched path of `service` changed: act once it has been quiet
    /// for the debounce.
    pub(super) fn paths_changed(&mut self, service: &str, now: Instant) {
        let Some(id) = self.find(service) else { return };
        let Some(svc) = self.svcs.get_mut(&id) else {
            return;
        };
        let Some(w) = svc.spec.watch.as_ref() else {
            return;
        };
        svc.watch_due = Some(now + w.debounce);
    }

    fn fire_watches(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let due: Vec<SvcId> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.watch_due.is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(svc) = self.svcs.get_mut(&id) else {
                continue;
            };
            svc.watch_due = None;
            let Some(w) = svc.spec.watch.clone() else {
                continue;
            };
            let name = svc.name().to_string();
            if svc.status != Status::Started {
                log::info!("{name}: a watched file changed; not running, nothing to do");
                continue;
            }
            match w.on_change {
                OnChange::Reload => {
                    let sig = svc.spec.reload_signal;
                    let pids: Vec<i32> = svc.procs.iter().filter_map(|p| p.m.pid()).collect();
                    log::info!(
                        "{name}: a watched file changed: reloading ({})",
                        crate::signals::short_name(sig)
                    );
                    for pid in pids {
                        fx.push(Effect::Signal {
                            pid,
                            signal: sig,
                            group: true,
                        });
                    }
                }
                OnChange::Restart => {
                    let live = self.proc_ids(id, true, |p| p.is_live());
                    if live.is_empty() {
                        continue;
                    }
                    log::info!("{name}: a watched file changed: restarting");
                    if let Some(svc) = self.svcs.get_mut(&id) {
                        svc.facts.restart_reason = Some("watch".into());
                    }
                    for p in live {
                        self.proc_event(p, Event::Restart, now, fx);
                    }
                }
            }
        }
    }

    /// What `ctl status` shows of a job.
    pub(super) fn job_state(&self, s: &Svc) -> Option<JobState> {
        let job = s.job.as_ref()?;
        let sched = s.spec.schedule.as_ref()?;
        let schedule = match &sched.when {
            When::Reboot => "@reboot".to_string(),
            When::Every(e) => format!("every {}", humantime::format_duration(*e)),
            When::Cron { text, tz, .. } => match tz.name.as_deref() {
                Some(n) if n != "UTC" => format!("{text} ({n})"),
                _ => text.clone(),
            },
        };
        Some(JobState {
            schedule,
            running: job.run.is_some(),
            last_run: job.last_run.map(|t| crate::cron::rfc3339(t as i64)),
            last_run_unix: job.last_run,
            last_result: job.last_result.map(str::to_string),
            last_exit: job.last_exit.clone(),
            next_run: job.next_wall.map(|t| crate::cron::rfc3339(t as i64)),
            next_run_unix: job.next_wall,
            paused: job
                .run
                .as_ref()
                .map(|r| r.paused.clone())
                .unwrap_or_default(),
            runs: job.counts,
        })
    }
}
