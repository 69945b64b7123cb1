//! The life of one supervised process, as a pure state machine.
//!
//! `Proc::next` takes an event and the current time and returns the actions
//! the caller must perform; it does no I/O, which is what lets the table
//! below be tested row by row. Deadlines live in the states themselves
//! (`Backoff.until`, `Stopping.kill_at`, `Running.max_age_at`): the caller
//! asks `deadline()` when to come back and then sends `Tick`, so no timer
//! can ever be stale.
//!
//! | state    | event        | next state                   | actions              |
//! |----------|--------------|------------------------------|----------------------|
//! | Idle, Backoff, Ended, Failed | Start | Starting            | Spawn                |
//! | Starting | Spawned      | Running (or Stopping if a stop came meanwhile) | - / Signal |
//! | Starting | SpawnFailed  | Failed                       | Failed               |
//! | Starting | SpawnFailed (retry) | Backoff, or Failed past max_retry | Retry / Failed |
//! | Starting | NotSpawned   | Idle (a stop came first)     | -                    |
//! | Starting | Stop         | Starting, stop on spawn      | -                    |
//! | Running  | Exited       | Backoff, Failed or Ended     | Backoff / Failed / Ended |
//! | Running  | Stop         | Stopping                     | Signal               |
//! | Running  | Restart      | Stopping, then start again   | Signal               |
//! | Running  | Tick (max_age due) | Stopping, then start again | Signal          |
//! | Running  | Kill         | Stopping (killed)            | Kill                 |
//! | Backoff  | Tick (due)   | Starting                     | Spawn                |
//! | Backoff  | Stop         | Ended                        | Ended                |
//! | Stopping | Exited       | Ended, or Starting (restart) | Ended / Spawn        |
//! | Stopping | Tick (grace over), Kill | Stopping (killed) | Kill                |
//!
//! Any other pair leaves the state as it is and does nothing (a second stop
//! request, a start of something already running).

use crate::proc::exit::Exit;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Never started, or waiting for its turn.
    Idle,
    /// Spawn requested; the outcome comes as the next event.
    Starting,
    Running {
        pid: i32,
        since: Instant,
        /// circus `max_age`: restart the process at this time.
        max_age_at: Option<Instant>,
    },
    /// Waiting out the backoff before the next start.
    Backoff { until: Instant },
    /// Asked to stop: SIGKILL at `kill_at` unless it ends first.
    Stopping {
        pid: i32,
        since: Instant,
        kill_at: Instant,
        killed: bool,
    },
    /// Ended and not to be restarted (stopped on request, or no respawn).
    Ended {
        exit: Option<Exit>,
        stop_took: Option<Duration>,
        killed: bool,
    },
    /// Gave up: could not be spawned, or too many failed starts.
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    Spawned {
        pid: i32,
    },
    SpawnFailed {
        reason: String,
        /// Worth trying again (an input file not there yet): a failed
        /// start under the usual backoff and `max_retry`, not FAILED at once.
        retry: bool,
    },
    /// The spawn was skipped: a stop came first (never started).
    NotSpawned,
    Exited(Exit),
    Stop,
    /// Stop, then start again once ended (ctl restart, a reconfigure).
    Restart,
    /// Failed its liveness probe: stop it, and count its end as a failed
    /// run (restarted with the usual backoff, FAILED after max_retry).
    Unhealthy,
    Kill,
    /// Time has passed: act on a deadline that is due.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn,
    /// Send this signal to the process group.
    Signal(i32, Signal),
    /// SIGKILL to the process group.
    Kill(i32),
    /// The process ended and starts again at `at` (for the log).
    Backoff {
        at: Instant,
        exit: Exit,
    },
    /// The process ended for good (no restart): report it.
    Ended(Option<Exit>),
    /// The process is FAILED: report it.
    Failed(String),
    /// The process could not be started and is tried again at `at`.
    Retry {
        at: Instant,
        reason: String,
    },
}

/// What the machine needs to know of the service's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub respawn: bool,
    pub max_retry: Option<u32>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub min_uptime: Duration,
    pub stop_signal: Signal,
    pub graceful_timeout: Duration,
    /// circus `max_age` and `max_age_variance`.
    pub max_age: Option<(Duration, Duration)>,
}

impl Policy {
    pub fn from_service(s: &crate::config::model::Service) -> Policy {
        Policy {
            respawn: s.respawn,
            max_retry: s.max_retry,
            backoff_initial: s.backoff.initial,
            backoff_max: s.backoff.max,
            min_uptime: s.min_uptime,
            stop_signal: s.stop_signal,
            graceful_timeout: s.graceful_timeout,
            max_age: s.max_age,
        }
    }

    /// The delay before restart number `failures` (1-based): initial × 2^(n-1),
    /// capped, then scaled by `jitter` in [0.5, 1.0] so that services that
    /// crash together do not restart in lockstep.
    pub fn backoff(&self, failures: u32, jitter: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let base = self
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        crate::units::duration_from_secs(base.as_secs_f64() * jitter.clamp(0.5, 1.0))
            .unwrap_or(base)
    }
}

/// Inputs that come from outside the process: the time, a jitter draw, and
/// whether the whole launcher is stopping (then nothing restarts).
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub now: Instant,
    /// A draw in [0.5, 1.0].
    pub jitter: f64,
    pub shutting_down: bool,
    /// The most a stop may take from now (what is left of the global deadline).
    pub grace_cap: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub state: State,
    /// Consecutive failed starts (runs shorter than `min_uptime`).
    pub failures: u32,
    /// Restarts done so far.
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// Start again once the process has ended (restart, max_age).
    pub restart_on_end: bool,
    /// A stop arrived while the spawn was under way.
    pub stop_on_spawn: bool,
    /// Stopped as unhealthy: its end is a failed run.
    pub crash_on_end: bool,
    /// Why the last start did not happen, while it waits to retry.
    pub not_started: Option<String>,
}

impl Default for Proc {
    fn default() -> Self {
        Proc::new()
    }
}

impl Proc {
    pub fn new() -> Proc {
        Proc {
            state: State::Idle,
            failures: 0,
            restarts: 0,
            last_exit: None,
            restart_on_end: false,
            stop_on_spawn: false,
            crash_on_end: false,
            not_started: None,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. } | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// True while a process exists or is about to.
    pub fn is_live(&self) -> bool {
        matches!(
            self.state,
            State::Running { .. } | State::Stopping { .. } | State::Starting
        )
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// When this process next needs a `Tick`.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Backoff { until } => Some(until),
            State::Stopping {
                kill_at,
                killed: false,
                ..
            } => Some(kill_at),
            State::Running { max_age_at, .. } => max_age_at,
            _ => None,
        }
    }

    pub fn next(&mut self, ev: Event, pol: &Policy, ctx: Ctx) -> Vec<Action> {
        use State as S;
        let now = ctx.now;
        let (state, actions) = match (&self.state, ev) {
            (S::Idle | S::Backoff { .. } | S::Ended { .. }, Event::Start | Event::Restart) => {
                (S::Starting, vec![Action::Spawn])
            }
            (S::Failed { .. }, Event::Start | Event::Restart) => {
                self.failures = 0;
                (S::Starting, vec![Action::Spawn])
            }
            (S::Starting, Event::Spawned { pid }) if self.stop_on_spawn => {
                self.stop_on_spawn = false;
                self.stopping(pid, now, pol, ctx)
            }
            (S::Starting, Event::Spawned { pid }) => {
                self.not_started = None;
                let max_age_at = pol.max_age.map(|(age, variance)| {
                    // jitter in [0.5, 1] picks a share of the variance.
                    let share = ((ctx.jitter - 0.5) * 2.0).clamp(0.0, 1.0);
                    let extra = crate::units::duration_from_secs(variance.as_secs_f64() * share)
                        .unwrap_or_default();
                    now + age + extra
                });
                (
                    S::Running {
                        pid,
                        since: now,
                        max_age_at,
                    },
                    vec![],
                )
            }
            (S::Starting, Event::NotSpawned) => {
                self.stop_on_spawn = false;
                self.restart_on_end = false;
                (S::Idle, vec![])
            }
            (
                S::Starting,
                Event::SpawnFailed {
                    reason,
                    retry: true,
                },
            ) if pol.respawn && !ctx.shutting_down && !self.stop_on_spawn => {
                self.restart_on_end = false;
                self.failures += 1;
                self.not_started = Some(reason.clone());
                if pol.max_retry.is_some_and(|max| self.failures > max) {
                    let reason = format!(
                        "{} consecutive failed starts; last: not started: {reason}",
                        self.failures
                    );
                    (
                        S::Failed {
                            reason: reason.clone(),
                        },
                        vec![Action::Failed(reason)],
                    )
                } else {
                    let at = now + pol.backoff(self.failures, ctx.jitter);
                    (S::Backoff { until: at }, vec![Action::Retry { at, reason }])
                }
            }
            (S::Starting, Event::SpawnFailed { reason, .. }) => {
                self.stop_on_spawn = false;
                self.restart_on_end = false;
                (
                    S::Failed {
                        reason: reason.clone(),
                    },
                    vec![Action::Failed(reason)],
                )
            }
            (S::Starting, Event::Stop | Event::Kill) => {
                self.stop_on_spawn = true;
                self.restart_on_end = false;
                return vec![];
            }
            (S::Running { since, .. }, Event::Exited(exit)) => {
                self.last_exit = Some(exit);
                let uptime = now.saturating_duration_since(*since);
                if std::mem::take(&mut self.restart_on_end) && !ctx.shutting_down {
                    self.restarts += 1;
                    (S::Starting, vec![Action::Spawn])
                } else {
                    self.after_exit(exit, uptime, pol, ctx)
                }
            }
            (S::Running { pid, .. }, Event::Stop) => {
                self.restart_on_end = false;
                let pid = *pid;
                self.stopping(pid, now, pol, ctx)
            }
            (S::Running { pid, .. }, Event::Unhealthy) => {
                let pid = *pid;
                self.crash_on_end = true;
                self.stopping(pid, now, pol, ctx)
            }
            (S::Running { pid, .. }, Event::Restart) => {
                let pid = *pid;
                self.restart_on_end = true;
                self.stopping(pid, now, pol, ctx)
            }
            (
                S::Running {
                    pid,
                    max_age_at: Some(at),
                    ..
                },
                Event::Tick,
            ) if *at <= now && !ctx.shutting_down => {
                let pid = *pid;
                self.restart_on_end = true;
                self.stopping(pid, now, pol, ctx)
            }
            (S::Running { pid, .. }, Event::Kill) => (
                S::Stopping {
                    pid: *pid,
                    since: now,
                    kill_at: now,
                    killed: true,
                },
                vec![Action::Kill(*pid)],
            ),
            (S::Backoff { until }, Event::Tick) if *until <= now && !ctx.shutting_down => {
                self.restarts += 1;
                (S::Starting, vec![Action::Spawn])
            }
            (S::Backoff { .. }, Event::Stop | Event::Kill) => (
                S::Ended {
                    exit: self.last_exit,
                    stop_took: None,
                    killed: false,
                },
                vec![Action::Ended(self.last_exit)],
            ),
            (S::Stopping { .. }, Event::Exited(exit))
                if std::mem::take(&mut self.crash_on_end) && !ctx.shutting_down =>
            {
                self.last_exit = Some(exit);
                self.after_exit(exit, Duration::ZERO, pol, ctx)
            }
            (S::Stopping { since, killed, .. }, Event::Exited(exit)) => {
                self.last_exit = Some(exit);
                if std::mem::take(&mut self.restart_on_end) && !ctx.shutting_down {
                    self.restarts += 1;
                    (S::Starting, vec![Action::Spawn])
                } else {
                    let took = now.saturating_duration_since(*since);
                    (
                        S::Ended {
                            exit: Some(exit),
                            stop_took: Some(took),
                            killed: *killed,
                        },
                        vec![Action::Ended(Some(exit))],
                    )
                }
            }
            (
                S::Stopping {
                    pid,
                    since,
                    killed: false,
                    kill_at,
                },
                Event::Tick,
            ) if *kill_at <= now => (
                S::Stopping {
                    pid: *pid,
                    since: *since,
                    kill_at: *kill_at,
                    killed: true,
                },
                vec![Action::Kill(*pid)],
            ),
            (
                S::Stopping {
                    pid,
                    since,
                    killed: false,
                    ..
                },
                Event::Kill,
            ) => (
                S::Stopping {
                    pid: *pid,
                    since: *since,
                    kill_at: now,
                    killed: true,
                },
                vec![Action::Kill(*pid)],
            ),
            (S::Stopping { .. }, Event::Stop) => {
                // A plain stop cancels a pending restart.
                self.restart_on_end = false;
                self.crash_on_end = false;
                return vec![];
            }
            _ => return vec![],
        };
        self.state = state;
        actions
    }

    fn stopping(&self, pid: i32, now: Instant, pol: &Policy, ctx: Ctx) -> (State, Vec<Action>) {
        let grace = pol.graceful_timeout.min(ctx.grace_cap);
        (
            State::Stopping {
                pid,
                since: now,
                kill_at: now + grace,
                killed: false,
            },
            vec![Action::Signal(pid, pol.stop_signal)],
        )
    }

    fn after_exit(
        &mut self,
        exit: Exit,
        uptime: Duration,
        pol: &Policy,
        ctx: Ctx,
    ) -> (State, Vec<Action>) {
        if !pol.respawn || ctx.shutting_down {
            return (
                State::Ended {
                    exit: Some(exit),
                    stop_took: None,
                    killed: false,
                },
                vec![Action::Ended(Some(exit))],
            );
        }
        if uptime < pol.min_uptime {
            self.failures += 1;
        } else {
            self.failures = 0; // a run that lasted clears the streak
        }
        if let Some(max) = pol.max_retry {
            if self.failures > max {
                let reason = format!(
                    "{} consecutive failed starts (each ran less than {}); last: {exit}",
                    self.failures,
                    crate::units::fmt_duration(pol.min_uptime)
                );
                return (
                    State::Failed {
                        reason: reason.clone(),
                    },
                    vec![Action::Failed(reason)],
                );
            }
        }
        // After a run that lasted, the replacement starts at once (as circus
        // does); only a streak of failed starts backs off.
        let delay = if self.failures == 0 {
            Duration::ZERO
        } else {
            pol.backoff(self.failures, ctx.jitter)
        };
        let until = ctx.now + delay;
        (
            State::Backoff { until },
            vec![Action::Backoff { at: until, exit }],
        )
    }
}

#[cfg(test)]
mod tests;
