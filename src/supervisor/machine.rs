//! The life of one supervised process, as a pure state machine.
//!
//! `Proc::next` takes an event and the current time and returns the actions
//! the caller must perform; it does no I/O, which is what lets the table
//! below be tested row by row. The caller feeds back the outcome of a
//! `Spawn` as `Spawned` or `SpawnFailed` immediately.
//!
//! | state    | event        | next state                 | actions                     |
//! |----------|--------------|----------------------------|-----------------------------|
//! | Idle     | Start        | Starting                   | Spawn                       |
//! | Backoff  | Start        | Starting                   | Spawn (manual start)        |
//! | Ended    | Start        | Starting                   | Spawn                       |
//! | Failed   | Start        | Starting (failures reset)  | Spawn                       |
//! | Starting | Spawned      | Running                    | -                           |
//! | Starting | SpawnFailed  | Failed                     | Failed                      |
//! | Running  | Exited       | Backoff, Failed or Ended   | Timer / Failed / Ended      |
//! | Running  | Stop         | Stopping                   | Signal, Timer(grace)        |
//! | Running  | Kill         | Stopping (killed)          | Kill                        |
//! | Backoff  | BackoffDone  | Starting                   | Spawn                       |
//! | Backoff  | Stop         | Ended                      | Ended                       |
//! | Stopping | Exited       | Ended                      | Ended                       |
//! | Stopping | GraceOver    | Stopping (killed)          | Kill                        |
//! | Stopping | Kill         | Stopping (killed)          | Kill                        |
//!
//! Any other pair leaves the state as it is and does nothing (a late timer,
//! a second stop request, a start of something already running).

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
    },
    /// Waiting out the backoff before the next start.
    Backoff {
        until: Instant,
    },
    /// Asked to stop; `killed` once SIGKILL was sent.
    Stopping {
        pid: i32,
        since: Instant,
        killed: bool,
    },
    /// Ended and not to be restarted (stopped on request, or no respawn).
    Ended {
        exit: Option<Exit>,
        stop_took: Option<Duration>,
        killed: bool,
    },
    /// Gave up: could not be spawned, or too many failed starts.
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    Spawned { pid: i32 },
    SpawnFailed { reason: String },
    Exited(Exit),
    BackoffDone,
    Stop,
    GraceOver,
    Kill,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn,
    /// Send the stop signal to the process group.
    Signal(i32, Signal),
    /// SIGKILL to the process group.
    Kill(i32),
    /// Call back with `BackoffDone` at this time.
    BackoffTimer(Instant),
    /// Call back with `GraceOver` at this time.
    GraceTimer(Instant),
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
    /// Bumped on every transition: timers carry it, so a stale one is ignored.
    pub generation: u64,
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
            generation: 0,
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

    pub fn next(&mut self, ev: Event, pol: &Policy, ctx: Ctx) -> Vec<Action> {
        use State as S;
        let (state, actions) = match (&self.state, ev) {
            (S::Idle | S::Backoff { .. } | S::Ended { .. }, Event::Start) => {
                (S::Starting, vec![Action::Spawn])
            }
            (S::Failed { .. }, Event::Start) => {
                self.failures = 0;
                (S::Starting, vec![Action::Spawn])
            }
            (S::Starting, Event::Spawned { pid }) => (
                S::Running {
                    pid,
                    since: ctx.now,
                },
                vec![],
            ),
            (S::Starting, Event::SpawnFailed { reason }) => (
                S::Failed {
                    reason: reason.clone(),
                },
                vec![Action::Failed(reason)],
            ),
            (S::Running { since, .. }, Event::Exited(exit)) => {
                self.last_exit = Some(exit);
                let uptime = ctx.now.saturating_duration_since(*since);
                self.after_exit(exit, uptime, pol, ctx)
            }
            (S::Running { pid, .. }, Event::Stop) => {
                let grace = pol.graceful_timeout.min(ctx.grace_cap);
                (
                    S::Stopping {
                        pid: *pid,
                        since: ctx.now,
                        killed: false,
                    },
                    vec![
                        Action::Signal(*pid, pol.stop_signal),
                        Action::GraceTimer(ctx.now + grace),
                    ],
                )
            }
            (S::Running { pid, .. }, Event::Kill) => (
                S::Stopping {
                    pid: *pid,
                    since: ctx.now,
                    killed: true,
                },
                vec![Action::Kill(*pid)],
            ),
            (S::Backoff { .. }, Event::BackoffDone) if !ctx.shutting_down => {
                self.restarts += 1;
                (S::Starting, vec![Action::Spawn])
            }
            (S::Backoff { .. }, Event::Stop | Event::BackoffDone) => (
                S::Ended {
                    exit: self.last_exit,
                    stop_took: None,
                    killed: false,
                },
                vec![Action::Ended(self.last_exit)],
            ),
            (S::Stopping { since, killed, .. }, Event::Exited(exit)) => {
                self.last_exit = Some(exit);
                let took = ctx.now.saturating_duration_since(*since);
                (
                    S::Ended {
                        exit: Some(exit),
                        stop_took: Some(took),
                        killed: *killed,
                    },
                    vec![Action::Ended(Some(exit))],
                )
            }
            (
                S::Stopping {
                    pid,
                    since,
                    killed: false,
                },
                Event::GraceOver | Event::Kill,
            ) => (
                S::Stopping {
                    pid: *pid,
                    since: *since,
                    killed: true,
                },
                vec![Action::Kill(*pid)],
            ),
            _ => return vec![],
        };
        self.state = state;
        self.generation += 1;
        actions
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
                    "{} consecutive failed starts (each ran less than {:?}); last: {exit}",
                    self.failures, pol.min_uptime
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
        (State::Backoff { until }, vec![Action::BackoffTimer(until)])
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

    fn running(pid: i32, since: Instant) -> Proc {
        Proc {
            state: State::Running { pid, since },
            ..Proc::new()
        }
    }

    #[test]
    fn transition_table() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let t10 = t0 + Duration::from_secs(10);
        let stopping = |killed| State::Stopping {
            pid: 7,
            since: t0,
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
                State::Running { pid: 7, since: t0 },
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
                State::Running { pid: 7, since: t0 },
                Event::Stop,
                t1,
                State::Stopping {
                    pid: 7,
                    since: t1,
                    killed: false,
                },
                vec![
                    Action::Signal(7, Signal::SIGTERM),
                    Action::GraceTimer(t1 + Duration::from_secs(9)),
                ],
            ),
            (
                State::Running { pid: 7, since: t0 },
                Event::Exited(Exit::Code(3)),
                t1,
                State::Backoff {
                    until: t1 + Duration::from_millis(100),
                },
                vec![Action::BackoffTimer(t1 + Duration::from_millis(100))],
            ),
            (
                State::Running { pid: 7, since: t0 },
                Event::Exited(Exit::Code(0)),
                t10,
                // It ran past min_uptime: replaced at once.
                State::Backoff { until: t10 },
                vec![Action::BackoffTimer(t10)],
            ),
            (
                State::Backoff { until: t1 },
                Event::BackoffDone,
                t1,
                State::Starting,
                vec![Action::Spawn],
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
                Event::GraceOver,
                t1,
                stopping(true),
                vec![Action::Kill(7)],
            ),
            (
                stopping(false),
                Event::Kill,
                t1,
                stopping(true),
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
            (stopping(true), Event::GraceOver, t1, stopping(true), vec![]),
            (stopping(false), Event::Stop, t1, stopping(false), vec![]),
            (
                State::Running { pid: 7, since: t0 },
                Event::Start,
                t1,
                State::Running { pid: 7, since: t0 },
                vec![],
            ),
            (State::Idle, Event::BackoffDone, t1, State::Idle, vec![]),
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
        let mut p = running(1, t0);
        let mut delays = Vec::new();
        let mut now = t0;
        for pid in 2..10 {
            now += Duration::from_millis(10);
            let actions = p.next(Event::Exited(Exit::Code(1)), &pol(), ctx(now));
            match actions.as_slice() {
                [Action::BackoffTimer(at)] => {
                    delays.push(*at - now);
                    now = *at;
                    p.next(Event::BackoffDone, &pol(), ctx(now));
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
        let mut p = running(1, t0);
        assert_eq!(
            p.next(Event::Exited(Exit::Code(4)), &no_respawn, ctx(t0)),
            vec![Action::Ended(Some(Exit::Code(4)))]
        );
        let mut p = running(1, t0);
        let mut c = ctx(t0);
        c.shutting_down = true;
        assert_eq!(
            p.next(Event::Exited(Exit::Signal(15)), &pol(), c),
            vec![Action::Ended(Some(Exit::Signal(15)))]
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
        let mut p = running(5, t0);
        let mut c = ctx(t0);
        c.grace_cap = Duration::from_millis(300);
        let actions = p.next(Event::Stop, &pol(), c);
        assert_eq!(
            actions[1],
            Action::GraceTimer(t0 + Duration::from_millis(300))
        );
    }
}
