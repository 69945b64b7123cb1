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
    },
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
            (S::Starting, Event::SpawnFailed { reason }) => {
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
mod tests {
    use super::*;

    fn pol() -> Policy {
        Policy {
            respawn: true,
            max_retry: Some(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            min_uptime: Duration::from_secs(5),
            stop_signal: Signal::SIGTERM,
            graceful_timeout: Duration::from_secs(30),
            max_age: None,
        }
    }

    fn ctx(now: Instant) -> Ctx {
        Ctx {
            now,
            jitter: 1.0,
            shutting_down: false,
            grace_cap: Duration::from_secs(9),
        }
    }

    fn running(pid: i32, since: Instant) -> State {
        State::Running {
            pid,
            since,
            max_age_at: None,
        }
    }

    #[test]
    fn transition_table() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let t10 = t0 + Duration::from_secs(10);
        let kill_at = t0 + Duration::from_secs(9);
        let stopping = |killed| State::Stopping {
            pid: 7,
            since: t0,
            kill_at,
            killed,
        };
        // (start state, event, now, expected state, expected actions)
        let rows: Vec<(State, Event, Instant, State, Vec<Action>)> = vec![
            (
                State::Idle,
                Event::Start,
                t0,
                State::Starting,
                vec![Action::Spawn],
            ),
            (
                State::Starting,
                Event::Spawned { pid: 7 },
                t0,
                running(7, t0),
                vec![],
            ),
            (
                State::Starting,
                Event::SpawnFailed {
                    reason: "nope".into(),
                },
                t0,
                State::Failed {
                    reason: "nope".into(),
                },
                vec![Action::Failed("nope".into())],
            ),
            (
                running(7, t0),
                Event::Stop,
                t1,
                State::Stopping {
                    pid: 7,
                    since: t1,
                    kill_at: t1 + Duration::from_secs(9),
                    killed: false,
                },
                vec![Action::Signal(7, Signal::SIGTERM)],
            ),
            (
                running(7, t0),
                Event::Exited(Exit::Code(3)),
                t1,
                State::Backoff {
                    until: t1 + Duration::from_millis(100),
                },
                vec![Action::Backoff {
                    at: t1 + Duration::from_millis(100),
                    exit: Exit::Code(3),
                }],
            ),
            (
                running(7, t0),
                Event::Exited(Exit::Code(0)),
                t10,
                // It ran past min_uptime: replaced at once.
                State::Backoff { until: t10 },
                vec![Action::Backoff {
                    at: t10,
                    exit: Exit::Code(0),
                }],
            ),
            (
                State::Backoff { until: t1 },
                Event::Tick,
                t1,
                State::Starting,
                vec![Action::Spawn],
            ),
            (
                State::Backoff { until: t10 },
                Event::Tick,
                t1,
                State::Backoff { until: t10 },
                vec![],
            ),
            (
                State::Backoff { until: t1 },
                Event::Stop,
                t1,
                State::Ended {
                    exit: None,
                    stop_took: None,
                    killed: false,
                },
                vec![Action::Ended(None)],
            ),
            (
                stopping(false),
                Event::Tick,
                kill_at,
                stopping(true),
                vec![Action::Kill(7)],
            ),
            (stopping(false), Event::Tick, t1, stopping(false), vec![]),
            (
                stopping(false),
                Event::Kill,
                t1,
                State::Stopping {
                    pid: 7,
                    since: t0,
                    kill_at: t1,
                    killed: true,
                },
                vec![Action::Kill(7)],
            ),
            (
                stopping(true),
                Event::Exited(Exit::Signal(9)),
                t1,
                State::Ended {
                    exit: Some(Exit::Signal(9)),
                    stop_took: Some(Duration::from_secs(1)),
                    killed: true,
                },
                vec![Action::Ended(Some(Exit::Signal(9)))],
            ),
            // Ignored pairs: nothing changes.
            (stopping(true), Event::Tick, t10, stopping(true), vec![]),
            (stopping(false), Event::Stop, t1, stopping(false), vec![]),
            (running(7, t0), Event::Start, t1, running(7, t0), vec![]),
            (State::Idle, Event::Tick, t1, State::Idle, vec![]),
            (State::Idle, Event::Stop, t1, State::Idle, vec![]),
        ];
        for (i, (from, ev, now, want_state, want_actions)) in rows.into_iter().enumerate() {
            let mut p = Proc {
                state: from.clone(),
                ..Proc::new()
            };
            let actions = p.next(ev.clone(), &pol(), ctx(now));
            assert_eq!(p.state, want_state, "row {i}: {from:?} + {ev:?}");
            assert_eq!(actions, want_actions, "row {i}: {from:?} + {ev:?}");
        }
    }

    #[test]
    fn crash_loop_backs_off_then_fails() {
        let t0 = Instant::now();
        let mut p = Proc {
            state: running(1, t0),
            ..Proc::new()
        };
        let mut delays = Vec::new();
        let mut now = t0;
        for pid in 2..10 {
            now += Duration::from_millis(10);
            let actions = p.next(Event::Exited(Exit::Code(1)), &pol(), ctx(now));
            match actions.as_slice() {
                [Action::Backoff { at, .. }] => {
                    delays.push(*at - now);
                    now = *at;
                    assert_eq!(p.deadline(), Some(now));
                    p.next(Event::Tick, &pol(), ctx(now));
                    p.next(Event::Spawned { pid }, &pol(), ctx(now));
                }
                [Action::Failed(reason)] => {
                    assert!(reason.contains("3 consecutive failed starts"), "{reason}");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            delays,
            vec![Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert!(matches!(p.state, State::Failed { .. }));
        assert_eq!(p.restarts, 2);
    }

    #[test]
    fn no_respawn_or_shutdown_ends() {
        let t0 = Instant::now();
        let mut no_respawn = pol();
        no_respawn.respawn = false;
        let mut p = Proc {
            state: running(1, t0),
            ..Proc::new()
        };
        assert_eq!(
            p.next(Event::Exited(Exit::Code(4)), &no_respawn, ctx(t0)),
            vec![Action::Ended(Some(Exit::Code(4)))]
        );
        let mut p = Proc {
            state: running(1, t0),
            ..Proc::new()
        };
        let mut c = ctx(t0);
        c.shutting_down = true;
        assert_eq!(
            p.next(Event::Exited(Exit::Signal(15)), &pol(), c),
            vec![Action::Ended(Some(Exit::Signal(15)))]
        );
    }

    #[test]
    fn restart_stops_then_spawns_again() {
        let t0 = Instant::now();
        let mut p = Proc {
            state: running(1, t0),
            ..Proc::new()
        };
        assert_eq!(
            p.next(Event::Restart, &pol(), ctx(t0)),
            vec![Action::Signal(1, Signal::SIGTERM)]
        );
        assert_eq!(
            p.next(Event::Exited(Exit::Code(0)), &pol(), ctx(t0)),
            vec![Action::Spawn]
        );
        assert_eq!((p.state.clone(), p.restarts), (State::Starting, 1));
        // A stop while restarting cancels the restart.
        p.next(Event::Spawned { pid: 2 }, &pol(), ctx(t0));
        p.next(Event::Restart, &pol(), ctx(t0));
        p.next(Event::Stop, &pol(), ctx(t0));
        assert!(matches!(
            p.next(Event::Exited(Exit::Code(0)), &pol(), ctx(t0))
                .as_slice(),
            [Action::Ended(_)]
        ));
    }

    #[test]
    fn unhealthy_counts_as_a_failed_run() {
        let t0 = Instant::now();
        let mut p = Proc {
            state: running(1, t0),
            ..Proc::new()
        };
        let t = t0 + Duration::from_secs(3600);
        assert_eq!(
            p.next(Event::Unhealthy, &pol(), ctx(t)),
            vec![Action::Signal(1, Signal::SIGTERM)]
        );
        // However long it ran, its end backs off like a crash.
        let actions = p.next(Event::Exited(Exit::Signal(15)), &pol(), ctx(t));
        assert_eq!(
            actions,
            vec![Action::Backoff {
                at: t + Duration::from_millis(100),
                exit: Exit::Signal(15)
            }]
        );
        assert_eq!(p.failures, 1);
    }

    #[test]
    fn max_age_restarts_when_due() {
        let t0 = Instant::now();
        let mut pol = pol();
        pol.max_age = Some((Duration::from_secs(60), Duration::from_secs(10)));
        let mut p = Proc {
            state: State::Starting,
            ..Proc::new()
        };
        let mut c = ctx(t0);
        c.jitter = 0.75; // half of the variance
        p.next(Event::Spawned { pid: 3 }, &pol, c);
        let due = t0 + Duration::from_secs(65);
        assert_eq!(p.deadline(), Some(due));
        assert_eq!(
            p.next(Event::Tick, &pol, ctx(due - Duration::from_secs(1))),
            vec![]
        );
        assert_eq!(
            p.next(Event::Tick, &pol, ctx(due)),
            vec![Action::Signal(3, Signal::SIGTERM)]
        );
        assert!(p.restart_on_end);
    }

    #[test]
    fn stop_during_spawn_stops_once_spawned() {
        let t0 = Instant::now();
        let mut p = Proc {
            state: State::Starting,
            ..Proc::new()
        };
        assert_eq!(p.next(Event::Stop, &pol(), ctx(t0)), vec![]);
        assert_eq!(
            p.next(Event::Spawned { pid: 9 }, &pol(), ctx(t0)),
            vec![Action::Signal(9, Signal::SIGTERM)]
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = pol();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(4, 1.0), Duration::from_millis(800));
        assert_eq!(p.backoff(20, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(1, 0.5), Duration::from_millis(50));
        assert_eq!(
            p.backoff(1, 0.0),
            Duration::from_millis(50),
            "jitter clamped"
        );
    }

    #[test]
    fn grace_capped_by_deadline() {
        let t0 = Instant::now();
        let mut p = Proc {
            state: running(5, t0),
            ..Proc::new()
        };
        let mut c = ctx(t0);
        c.grace_cap = Duration::from_millis(300);
        p.next(Event::Stop, &pol(), c);
        assert_eq!(p.deadline(), Some(t0 + Duration::from_millis(300)));
    }
}
