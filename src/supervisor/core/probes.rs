//! Readiness and liveness (README "Probes"), and what the kernel and the
//! services tell about themselves (OOM kills, sd_notify).
//!
//! A started service is probed until it is ready, within `ready.timeout`
//! (else FAILED). With `ready.period` it is probed again every period, and
//! `failure_threshold` failures in a row make it *not ready* — no restart —
//! until a probe passes again. A `live:` probe runs every period while the
//! service runs; `failure_threshold` failures in a row restart it (its
//! usual backoff), with the reason `liveness`. Probes are effects: the
//! shell runs them without blocking and answers with `ProbeDone`.

use super::*;
use crate::config::model::{ReadyCheck, Service};
use crate::proc::exit::Exit;
use crate::supervisor::machine::Event;
use crate::units::fmt_duration;
use std::time::{Duration, Instant};

/// The shortest per-probe timeout given to the shell.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(10);

/// Which check a probe in flight serves.
enum Kind {
    Ready,
    Live,
}

impl Core {
    /// Arm the readiness check of a service that starts now.
    pub(super) fn arm_readiness(spec: &Service, now: Instant) -> Option<Readiness> {
        spec.ready.as_ref().map(|r| Readiness {
            ok: false,
            ever: false,
            deadline: now + r.timeout,
            // A notify service says when it is ready: nothing to probe.
            next_at: (r.check != ReadyCheck::Notify).then_some(now),
            running: None,
            failures: 0,
        })
    }

    /// A process of `proc`'s service was just spawned: its liveness clock
    /// starts again (`initial_delay`, then a period).
    pub(super) fn arm_liveness(&mut self, proc: ProcId, now: Instant) {
        let Some(&(s, _)) = self.where_is.get(&proc) else {
            return;
        };
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        let Some(l) = svc.spec.live.as_ref() else {
            return;
        };
        let first = now + l.initial_delay + l.period;
        let live = svc.liveness.get_or_insert_with(Liveness::default);
        live.failures = 0;
        if live.running.is_none() {
            live.next_at = Some(first);
        }
    }

    /// When the probes next need a tick.
    pub(super) fn probe_deadlines(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        for s in self.svcs.values().filter(|s| s.status == Status::Started) {
            if let Some(r) = &s.readiness {
                if r.running.is_none() {
                    consider(r.next_at);
                }
                if !r.ever {
                    consider(Some(r.deadline));
                }
            }
            if let Some(l) = &s.liveness {
                if l.running.is_none() {
                    consider(l.next_at);
                }
            }
        }
        at
    }

    pub(super) fn start_due_probes(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let mut next_probe = self.next_probe;
        let mut failed = Vec::new();
        for (&s, svc) in self.svcs.iter_mut() {
            if svc.status != Status::Started {
                continue;
            }
            let spec = svc.spec.clone();
            if let (Some(r), Some(check)) = (&mut svc.readiness, spec.ready.as_ref()) {
                if !r.ever && r.running.is_none() && now >= r.deadline {
                    // Never ready in time (a notify service that never said
                    // so, a probe that hung past it).
                    failed.push((
                        s,
                        format!("not ready after {}", fmt_duration(check.timeout)),
                    ));
                    continue;
                }
                let due = r.running.is_none() && r.next_at.is_some_and(|t| t <= now);
                if due && (r.ever || !r.ok) {
                    let probe = ProbeId(next_probe);
                    next_probe += 1;
                    r.running = Some(probe);
                    r.next_at = None;
                    // Until the first success a probe never outlives the
                    // readiness deadline; after, it gets the timeout or a
                    // period, whichever is shorter.
                    let timeout = if r.ever {
                        check.timeout.min(check.period.unwrap_or(check.timeout))
                    } else {
                        r.deadline.saturating_duration_since(now)
                    };
                    fx.push(Effect::Probe {
                        probe,
                        service: spec.name.clone(),
                        check: check.check.clone(),
                        timeout: timeout.max(MIN_PROBE_TIMEOUT),
                        spec: spec.clone(),
                    });
                }
            }
            let all_running = svc.procs.iter().take(svc.scale).all(|p| p.m.is_running());
            if let (Some(l), Some(check)) = (&mut svc.liveness, spec.live.as_ref()) {
                if l.running.is_none() && l.next_at.is_some_and(|t| t <= now) {
                    if !all_running {
                        // Between two runs: probed again once it runs.
                        l.next_at = Some(now + check.period);
                        continue;
                    }
                    let probe = ProbeId(next_probe);
                    next_probe += 1;
                    l.running = Some(probe);
                    l.next_at = None;
                    fx.push(Effect::Probe {
                        probe,
                        service: spec.name.clone(),
                        check: check.check.clone(),
                        timeout: check.timeout.max(MIN_PROBE_TIMEOUT),
                        spec: spec.clone(),
                    });
                }
            }
        }
        self.next_probe = next_probe;
        for (s, reason) in failed {
            self.svc_event(s, &Event::Stop, now, fx);
            self.on_failed(s, reason, now, fx);
        }
    }

    /// The verdict of probe `probe` (or the end of a pre_stop hook).
    pub(super) fn probe_done(
        &mut self,
        probe: ProbeId,
        ok: bool,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        if self.hook_done(probe, ok, now) {
            return;
        }
        // The probe no longer runs; its verdict counts only while the
        // service is started and no stop is on.
        let stopping = self.stop.active.is_some();
        let found = self.svcs.iter_mut().find_map(|(&s, x)| {
            let counts = !stopping && x.status == Status::Started;
            if let Some(r) = x.readiness.as_mut().filter(|r| r.running == Some(probe)) {
                r.running = None;
                Some((s, Kind::Ready, counts))
            } else if let Some(l) = x.liveness.as_mut().filter(|l| l.running == Some(probe)) {
                l.running = None;
                Some((s, Kind::Live, counts))
            } else {
                None
            }
        });
        let Some((s, kind, true)) = found else {
            return;
        };
        match kind {
            Kind::Ready => self.ready_verdict(s, ok, now, fx),
            Kind::Live => self.live_verdict(s, ok, now, fx),
        }
    }

    fn ready_verdict(&mut self, s: SvcId, ok: bool, now: Instant, fx: &mut Vec<Effect>) {
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        let Some(r) = svc.readiness.as_mut() else {
            return;
        };
        let Some(check) = svc.spec.ready.clone() else {
            return;
        };
        let name = svc.spec.name.clone();
        if ok {
            r.failures = 0;
            if !r.ok {
                r.ok = true;
                if r.ever {
                    log::info!("{name}: ready again");
                } else {
                    log::info!("{name}: ready");
                }
            }
            r.ever = true;
            r.next_at = check.period.map(|p| now + p);
            return;
        }
        svc.facts.ready_probe_failures += 1;
        if !r.ever {
            if now >= r.deadline {
                let reason = format!("not ready after {}", fmt_duration(check.timeout));
                self.svc_event(s, &Event::Stop, now, fx);
                self.on_failed(s, reason, now, fx);
            } else {
                r.next_at = Some(now + check.interval);
            }
            return;
        }
        r.failures += 1;
        if r.ok && r.failures >= check.failure_threshold {
            r.ok = false;
            log::warn!(
                "{name}: not ready ({} failed readiness probes in a row)",
                r.failures
            );
        }
        r.next_at = check.period.map(|p| now + p);
    }

    fn live_verdict(&mut self, s: SvcId, ok: bool, now: Instant, fx: &mut Vec<Effect>) {
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        let Some(check) = svc.spec.live.clone() else {
            return;
        };
        let Some(l) = svc.liveness.as_mut() else {
            return;
        };
        l.next_at = Some(now + check.period);
        if ok {
            l.failures = 0;
            return;
        }
        l.failures += 1;
        svc.facts.live_probe_failures += 1;
        if l.failures < check.failure_threshold {
            return;
        }
        log::warn!(
            "{}: liveness probe failed {} times in a row: restarting",
            svc.spec.name,
            l.failures
        );
        l.failures = 0;
        l.next_at = None;
        svc.facts.restart_reason = Some("liveness".into());
        let ids: Vec<ProcId> = svc
            .procs
            .iter()
            .filter(|p| p.m.is_running())
            .map(|p| p.id)
            .collect();
        for id in ids {
            self.proc_event(id, Event::Unhealthy, now, fx);
        }
    }

    /// Record how a process ended, beyond its status (an OOM kill). A
    /// critical service killed for lack of memory stops everything with
    /// 137, whatever its respawn: the orchestrator must see the OOM kill.
    pub(super) fn note_exit(
        &mut self,
        proc: ProcId,
        exit: Exit,
        oom: bool,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let Some(&(s, _)) = self.where_is.get(&proc) else {
            return;
        };
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        let oom = oom && exit == Exit::Signal(nix::sys::signal::Signal::SIGKILL as i32);
        svc.facts.last_oom = oom;
        if !oom {
            return;
        }
        svc.facts.oom_kills += 1;
        let name = svc.spec.name.clone();
        log::error!("{name}: killed by the kernel: out of memory");
        // (The main command's end stops everything anyway, as its own.)
        if svc.spec.critical && !svc.spec.main && self.stop.active.is_none() {
            log::error!("{name}: critical service OOM-killed: stopping everything");
            self.begin_stop(Some(exit.outcome()), Cause::CriticalEnded(name), now, fx);
        }
    }

    /// An sd_notify message from a service.
    pub(super) fn notified(&mut self, service: &str, message: &str, now: Instant) {
        let Some(s) = self.find(service) else {
            return;
        };
        let Some(svc) = self.svcs.get_mut(&s) else {
            return;
        };
        for line in message.lines() {
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            match key {
                "READY" if value == "1" => {
                    if let Some(r) = svc
                        .readiness
                        .as_mut()
                        .filter(|_| svc.status == Status::Started)
                    {
                        if !r.ok {
                            log::info!("{service}: ready (sd_notify)");
                        }
                        r.ok = true;
                        r.ever = true;
                    }
                }
                "STATUS" => {
                    svc.facts.status_text = Some(value.chars().take(200).collect());
                }
                "STOPPING" if value == "1" => log::debug!("{service}: stopping (sd_notify)"),
                _ => {}
            }
        }
        let _ = now;
    }

    /// Tell our own supervisor we are ready, once every autostart service is.
    pub(super) fn maybe_tell_ready(&mut self, fx: &mut Vec<Effect>) {
        if !self.own.notify || self.own.told_ready || self.stop.active.is_some() {
            return;
        }
        let ready = self
            .svcs
            .values()
            .filter(|s| s.spec.autostart && s.status != Status::Retired)
            .all(Svc::is_up);
        if ready {
            self.own.told_ready = true;
            fx.push(Effect::Notify(
                "READY=1\nSTATUS=every service is ready".into(),
            ));
        }
    }
}
