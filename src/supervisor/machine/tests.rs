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

/// A process in `state`, the rest as new.
fn proc_in(state: State) -> Proc {
    Proc {
        state,
        ..Proc::new()
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
                retry: false,
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
        let mut p = proc_in(from.clone());
        let actions = p.next(ev.clone(), &pol(), ctx(now));
        assert_eq!(p.state, want_state, "row {i}: {from:?} + {ev:?}");
        assert_eq!(actions, want_actions, "row {i}: {from:?} + {ev:?}");
    }
}

#[test]
fn crash_loop_backs_off_then_fails() {
    let t0 = Instant::now();
    let mut p = proc_in(running(1, t0));
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
fn missing_input_retries_with_backoff_then_fails() {
    let t0 = Instant::now();
    let mut p = Proc::new();
    let fail = || Event::SpawnFailed {
        reason: "secret DB_PASSWORD: /run/secrets/db: not found".into(),
        retry: true,
    };
    let mut now = t0;
    // max_retry 2: two retries with a growing backoff, then FAILED.
    for (n, delay_ms) in [(1u32, 100u64), (2, 200)] {
        assert_eq!(p.next(Event::Start, &pol(), ctx(now)), vec![Action::Spawn]);
        let at = now + Duration::from_millis(delay_ms);
        assert_eq!(
            p.next(fail(), &pol(), ctx(now)),
            vec![Action::Retry {
                at,
                reason: "secret DB_PASSWORD: /run/secrets/db: not found".into()
            }],
            "attempt {n}"
        );
        assert_eq!(p.state, State::Backoff { until: at });
        assert_eq!(p.failures, n);
        assert!(p.not_started.is_some());
        now = at;
    }
    p.next(Event::Start, &pol(), ctx(now));
    let a = p.next(fail(), &pol(), ctx(now));
    assert!(
        matches!(&a[..], [Action::Failed(r)] if r.starts_with("3 consecutive failed starts; last: not started: secret DB_PASSWORD")),
        "{a:?}"
    );
    // The file appears: a start (ctl start) runs and clears the reason.
    let mut p = Proc::new();
    p.next(Event::Start, &pol(), ctx(t0));
    p.next(fail(), &pol(), ctx(t0));
    p.next(Event::Tick, &pol(), ctx(t0 + Duration::from_secs(1)));
    assert_eq!(p.state, State::Starting);
    p.next(
        Event::Spawned { pid: 9 },
        &pol(),
        ctx(t0 + Duration::from_secs(1)),
    );
    assert_eq!(p.not_started, None);
    assert!(p.is_running());
    // Without respawn, while shutting down or once a stop came: as before.
    let mut nr = pol();
    nr.respawn = false;
    let mut p = Proc::new();
    p.next(Event::Start, &nr, ctx(t0));
    assert!(matches!(
        &p.next(fail(), &nr, ctx(t0))[..],
        [Action::Failed(_)]
    ));
    let mut p = Proc::new();
    p.next(Event::Start, &pol(), ctx(t0));
    p.next(Event::Stop, &pol(), ctx(t0));
    assert!(matches!(
        &p.next(fail(), &pol(), ctx(t0))[..],
        [Action::Failed(_)]
    ));
}

#[test]
fn no_respawn_or_shutdown_ends() {
    let t0 = Instant::now();
    let mut no_respawn = pol();
    no_respawn.respawn = false;
    let mut p = proc_in(running(1, t0));
    assert_eq!(
        p.next(Event::Exited(Exit::Code(4)), &no_respawn, ctx(t0)),
        vec![Action::Ended(Some(Exit::Code(4)))]
    );
    let mut p = proc_in(running(1, t0));
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
    let mut p = proc_in(running(1, t0));
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
    let mut p = proc_in(running(1, t0));
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
    let mut p = proc_in(State::Starting);
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
    let mut p = proc_in(State::Starting);
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
    let mut p = proc_in(running(5, t0));
    let mut c = ctx(t0);
    c.grace_cap = Duration::from_millis(300);
    p.next(Event::Stop, &pol(), c);
    assert_eq!(p.deadline(), Some(t0 + Duration::from_millis(300)));
}
