//! The core without processes: a fake clock and a stand-in for the shell
//! that gives every spawn a pid and records what the core asked for.

use super::*;
use crate::config::model::{HostPort, Ready, ReadyCheck};
use crate::ctl::proto::{Command, Reply};
use crate::error::Outcome;
use crate::proc::exit::Exit;
use std::collections::BTreeSet;

/// The shell's stand-in.
struct Sim {
    core: Core,
    t0: Instant,
    now: Instant,
    /// The fake wall clock: it reads `.1` (seconds since the epoch) at `.0`.
    wall: (Instant, f64),
    next_pid: i32,
    /// name → pids, in spawn order.
    spawned: Vec<(String, i32)>,
    signals: Vec<(i32, Signal)>,
    probes: Vec<(ProbeId, String)>,
    replies: Vec<Reply>,
    /// `ctl logs` reads asked of the shell, by service.
    log_reads: Vec<Option<String>>,
    reloads: usize,
    /// The `retry` of each `Effect::Reconfigure`.
    reconfigures: Vec<bool>,
    exit: Option<Outcome>,
    hooks: Vec<(ProbeId, String)>,
    notes: Vec<String>,
    /// Services whose inputs cannot be read: their spawns fail, to retry.
    unreadable: Vec<String>,
    /// `Effect::StepEnded`: a step run alone ended.
    step_ends: Vec<(String, crate::proc::JobEnd)>,
}

/// The core's options: a 9 s deadline, `drain`, sd_notify to our own
/// supervisor or not.
fn options(drain: Duration, notify_self: bool) -> CoreOptions {
    CoreOptions {
        shutdown_timeout: Duration::from_secs(9),
        can_reload: true,
        seed: 7,
        drain,
        notify_self,
        can_reconfigure: true,
        start_time_unix: 0.0,
        main_on_tty: false,
        pillar: None,
    }
}

/// The clocks at `t`, for a core fed directly: no wall clock to speak of
/// (it reads 0).
fn clock(t: Instant) -> Now {
    Now { mono: t, unix: 0.0 }
}

/// The process the core's first tick spawns.
fn first_spawn(core: &mut Core, now: Instant) -> ProcId {
    core.handle(Input::Tick, clock(now))
        .into_iter()
        .find_map(|e| match e {
            Effect::Spawn { proc, .. } => Some(proc),
            _ => None,
        })
        .expect("a spawn")
}

/// The effects of the core's first spawn failing for good: the program
/// is not found (`reason`).
fn first_spawn_not_found(core: &mut Core, reason: &str) -> Vec<Effect> {
    let now = Instant::now();
    let proc = first_spawn(core, now);
    let failed = Input::SpawnFailed {
        proc,
        reason: reason.into(),
        outcome: Outcome::NotFound,
        retry: false,
    };
    core.handle(failed, clock(now))
}

fn svc(name: &str) -> Service {
    Service::new(name, vec!["x".into()])
}

fn after(name: &str, deps: &[&str]) -> Service {
    let mut s = svc(name);
    s.after = deps.iter().map(|d| d.to_string()).collect();
    s
}

fn with_ready(s: Service, timeout_ms: u64) -> Service {
    with_check(s, ReadyCheck::File("/nonexistent".into()), timeout_ms)
}

/// `s` ready once `check` passes, within `timeout_ms`.
fn with_check(mut s: Service, check: ReadyCheck, timeout_ms: u64) -> Service {
    s.ready = Some(Ready {
        check,
        timeout: Duration::from_millis(timeout_ms),
        interval: Duration::from_millis(100),
        period: None,
        failure_threshold: 3,
    });
    s
}

impl Sim {
    fn new(services: Vec<(Service, Role)>) -> Sim {
        Sim::with(services, options(Duration::ZERO, false))
    }

    fn with(services: Vec<(Service, Role)>, opts: CoreOptions) -> Sim {
        Sim::started(Core::new(services, opts), Instant::now())
    }

    /// The stand-in around `core`, its clock at `t0`, after the first tick.
    fn started(core: Core, t0: Instant) -> Sim {
        Sim::started_at_wall(core, t0, 0.0)
    }

    /// The same, the wall clock at `unix` at `t0`.
    fn started_at_wall(core: Core, t0: Instant, unix: f64) -> Sim {
        let mut sim = Sim {
            core,
            t0,
            now: t0,
            wall: (t0, unix),
            next_pid: 100,
            spawned: Vec::new(),
            signals: Vec::new(),
            probes: Vec::new(),
            replies: Vec::new(),
            log_reads: Vec::new(),
            reloads: 0,
            reconfigures: Vec::new(),
            exit: None,
            hooks: Vec::new(),
            notes: Vec::new(),
            unreadable: Vec::new(),
            step_ends: Vec::new(),
        };
        sim.feed(Input::Tick);
        sim
    }

    fn config(names: &[Service]) -> Sim {
        Sim::new(names.iter().cloned().map(|s| (s, Role::Config)).collect())
    }

    /// Feed one input and carry out the effects, as the shell does: the
    /// outcome of a spawn comes back as the next input.
    fn feed(&mut self, input: Input) {
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(i) = queue.pop_front() {
            for e in self.core.handle(i, self.clocks()) {
                match e {
                    Effect::Spawn { proc, spec, .. } if self.unreadable.contains(&spec.name) => {
                        queue.push_back(Input::SpawnFailed {
                            proc,
                            reason: format!("secret PW: /run/secrets/{}: not found", spec.name),
                            outcome: Outcome::Failed,
                            retry: true,
                        });
                    }
                    Effect::Spawn { proc, spec, .. } => {
                        self.next_pid += 1;
                        self.spawned.push((spec.name.clone(), self.next_pid));
                        queue.push_back(Input::Spawned {
                            proc,
                            pid: self.next_pid,
                        });
                    }
                    Effect::Signal { pid, signal, .. } => self.signals.push((pid, signal)),
                    Effect::Probe { probe, service, .. } => self.probes.push((probe, service)),
                    Effect::CancelProbe(_) | Effect::StopBegan => {}
                    Effect::Hook { probe, spec, .. } => self.hooks.push((probe, spec.name.clone())),
                    Effect::Notify(m) => self.notes.push(m),
                    Effect::Reply { reply, .. } => self.replies.push(reply),
                    Effect::ReadLogs { service, .. } => self.log_reads.push(service),
                    Effect::Reload { .. } => self.reloads += 1,
                    Effect::Reconfigure { retry, .. } => self.reconfigures.push(retry),
                    Effect::StepEnded { name, end } => self.step_ends.push((name, end)),
                    Effect::Exit(code) => self.exit = Some(code),
                }
            }
        }
    }

    /// The clocks now, as the shell reads them before each input.
    fn clocks(&self) -> Now {
        let (at, unix) = self.wall;
        let unix = if self.now >= at {
            unix + self.now.duration_since(at).as_secs_f64()
        } else {
            unix - at.duration_since(self.now).as_secs_f64()
        };
        Now {
            mono: self.now,
            unix,
        }
    }

    /// The wall clock is set (or jumps): it reads `unix` at `at`.
    fn set_wall(&mut self, at: Instant, unix: f64) {
        self.wall = (at, unix);
    }

    fn at(&mut self, ms: u64) {
        self.now = self.t0 + Duration::from_millis(ms);
        self.feed(Input::Tick);
    }

    fn pid(&self, name: &str) -> i32 {
        self.spawned
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("{name} never spawned: {:?}", self.spawned))
    }

    fn names_spawned(&self) -> Vec<&str> {
        self.spawned.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn exited(&mut self, name: &str, exit: Exit) {
        let pid = self.pid(name);
        self.feed(Input::Exited {
            pid,
            exit,
            oom: false,
        });
    }

    /// Names that got `sig`, in order.
    fn signalled(&self, sig: Signal) -> Vec<String> {
        self.signals
            .iter()
            .filter(|(_, s)| *s == sig)
            .filter_map(|(pid, _)| {
                self.spawned
                    .iter()
                    .find(|(_, p)| p == pid)
                    .map(|(n, _)| n.clone())
            })
            .collect()
    }

    /// The signals `name`'s process got, in order.
    fn signals_to(&self, name: &str) -> Vec<Signal> {
        let pid = self.pid(name);
        self.signals
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, s)| *s)
            .collect()
    }

    fn ctl(&mut self, cmd: Command) -> Reply {
        self.feed(Input::Ctl { conn: 1, cmd });
        self.replies.pop().expect("a reply")
    }

    fn health(&mut self, check: Health) -> Reply {
        self.ctl(Command::Health { check })
    }

    /// The last live reconfigure, as `ctl status` shows it.
    fn reconfigure_state(&mut self) -> crate::ctl::proto::ReconfigureState {
        self.ctl(Command::Status { name: None })
            .reconfigure
            .expect("shown")
    }

    /// `name`'s row of `ctl status`.
    fn row(&self, name: &str) -> crate::ctl::proto::ServiceState {
        self.core
            .status(self.now)
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    fn state(&self, name: &str) -> StateName {
        self.row(name).state
    }
}

use crate::ctl::proto::{Health, StateName};

#[test]
fn dependents_wait_for_readiness() {
    let mut sim = Sim::config(&[with_ready(svc("db"), 5000), after("web", &["db"])]);
    assert_eq!(sim.names_spawned(), ["db"], "web waits for db");
    assert_eq!(sim.probes.len(), 1);
    let (probe, _) = sim.probes[0].clone();
    sim.now = sim.t0 + Duration::from_millis(50);
    sim.feed(Input::ProbeDone { probe, ok: false });
    assert_eq!(sim.names_spawned(), ["db"]);
    // The next probe comes after the interval: a deadline, no busy loop.
    assert_eq!(
        sim.core.next_deadline(),
        Some(sim.t0 + Duration::from_millis(150))
    );
    sim.at(150);
    assert_eq!(sim.probes.len(), 2);
    let (probe, _) = sim.probes[1].clone();
    sim.feed(Input::ProbeDone { probe, ok: true });
    assert_eq!(sim.names_spawned(), ["db", "web"]);
    assert_eq!(sim.core.next_deadline(), None, "idle: nothing to wake for");
}

#[test]
fn not_ready_in_time_fails_and_a_critical_one_stops_everything() {
    let mut db = with_ready(svc("db"), 300);
    db.critical = true;
    let mut sim = Sim::config(&[db, after("web", &["db"]), svc("other")]);
    // Every probe fails; they come one interval apart until the timeout.
    let mut t = 0;
    while !sim.core.is_stopping() {
        let (probe, _) = sim.probes.pop().expect("a probe in flight");
        sim.feed(Input::ProbeDone { probe, ok: false });
        t += 100;
        assert!(t <= 400, "the readiness timeout never came");
        sim.at(t);
    }
    assert!(!sim.names_spawned().contains(&"web"), "web never started");
    assert_eq!(sim.state("db"), StateName::Failed);
    let mut stopped = sim.signalled(Signal::SIGTERM);
    stopped.sort();
    assert_eq!(stopped, ["db", "other"]);
    sim.exited("db", Exit::Signal(15));
    sim.exited("other", Exit::Signal(15));
    assert_eq!(
        sim.exit,
        Some(Outcome::CriticalGaveUp),
        "a critical service FAILED"
    );
}

#[test]
fn stop_rule_dependents_first_others_at_once() {
    // worker runs after web; db and the main command have no relation.
    let mut sim = Sim::new(vec![
        (svc("web"), Role::Config),
        (after("worker", &["web"]), Role::Config),
        (svc("db"), Role::Config),
        (Service::main(vec!["bash".into()]), Role::Main),
    ]);
    // Without a readiness check, `after` orders the spawns.
    let order = sim.names_spawned();
    let pos = |n: &str| order.iter().position(|x| *x == n).expect("spawned");
    assert!(pos("web") < pos("worker"), "{order:?}");
    sim.now = sim.t0 + Duration::from_secs(1);
    sim.feed(Input::Signal(Signal::SIGTERM));
    let first: BTreeSet<String> = sim.signalled(Signal::SIGTERM).into_iter().collect();
    assert_eq!(
        first,
        ["db", "main", "worker"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "all but web at once; the main command gets the very signal"
    );
    assert!(sim.signals.contains(&(sim.pid("main"), Signal::SIGTERM)));
    // bash ignores TERM: it does not hold anybody up.
    sim.exited("worker", Exit::Code(0));
    assert_eq!(
        sim.signalled(Signal::SIGTERM).last().map(String::as_str),
        Some("web")
    );
    sim.exited("db", Exit::Code(0));
    sim.exited("web", Exit::Code(0));
    assert_eq!(sim.exit, None, "bash still runs");
    // The deadline: SIGKILL for what is left, and the main's status decides.
    assert_eq!(
        sim.core.next_deadline(),
        Some(sim.now + Duration::from_secs(9))
    );
    sim.now += Duration::from_secs(9);
    sim.feed(Input::Tick);
    assert_eq!(sim.signalled(Signal::SIGKILL), ["main"]);
    sim.exited("main", Exit::Signal(9));
    assert_eq!(sim.exit, Some(Outcome::Signaled(9)));
}

/// A main command on a terminal (`docker run -ti IMAGE bash`): a stop
/// sends it SIGHUP first, then its stop signal; other services only theirs.
/// bash ends on the HUP: the launcher exits at once with its status. One
/// that ignores both is killed at the deadline, HUP before TERM before KILL.
#[test]
fn a_main_on_a_terminal_gets_sighup_first() {
    let services = || {
        vec![
            (svc("web"), Role::Config),
            (Service::main(vec!["bash".into()]), Role::Main),
        ]
    };
    for tty in [false, true] {
        let mut core = Core::new(services(), options(Duration::ZERO, false));
        core.main_on_tty = tty;
        let mut sim = Sim::started(core, Instant::now());
        sim.now = sim.t0 + Duration::from_secs(1);
        sim.feed(Input::Signal(Signal::SIGTERM));
        let to_main = sim.signals_to("main");
        if !tty {
            assert_eq!(to_main, [Signal::SIGTERM]);
            continue;
        }
        assert_eq!(to_main, [Signal::SIGHUP, Signal::SIGTERM]);
        assert_eq!(sim.signalled(Signal::SIGHUP), ["main"], "only the main");
        sim.exited("web", Exit::Code(0));
        sim.exited("main", Exit::Signal(1));
        assert_eq!(
            sim.exit,
            Some(Outcome::Signaled(1)),
            "bash's own status, at once"
        );
        assert!(sim.signalled(Signal::SIGKILL).is_empty());
        assert_eq!(
            sim.core.termination().summary(),
            "exit 129: stopped on request (TERM) (main: killed by HUP)",
            "the status is the main's, and says so"
        );
    }
    // A main that ignores HUP and TERM: KILL at the deadline, last.
    let mut core = Core::new(services(), options(Duration::ZERO, false));
    core.main_on_tty = true;
    let mut sim = Sim::started(core, Instant::now());
    sim.feed(Input::Signal(Signal::SIGTERM));
    sim.exited("web", Exit::Code(0));
    sim.now += Duration::from_secs(9);
    sim.feed(Input::Tick);
    let to_main = sim.signals_to("main");
    assert_eq!(to_main, [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGKILL]);
    sim.exited("main", Exit::Signal(9));
    assert_eq!(sim.exit, Some(Outcome::Signaled(9)));
}

#[test]
fn priorities_stop_last_but_never_wait_for_the_main_command() {
    let mut high = svc("high");
    high.priority = 10;
    let mut sim = Sim::new(vec![
        (high, Role::Config),
        (svc("low"), Role::Config),
        (Service::main(vec!["bash".into()]), Role::Main),
    ]);
    sim.feed(Input::Signal(Signal::SIGTERM));
    let mut got = sim.signalled(Signal::SIGTERM);
    got.sort();
    assert_eq!(got, ["low", "main"]);
    sim.exited("low", Exit::Code(0));
    assert!(sim.signalled(Signal::SIGTERM).contains(&"high".to_string()));
}

#[test]
fn exit_status_rule() {
    // (services, what happens, expected outcome)
    type Step = fn(&mut Sim);
    type Row = (Vec<(Service, Role)>, Step, Outcome);
    let main = |argv: &str| (Service::main(vec![argv.into()]), Role::Main);
    let critical = || {
        let mut s = svc("c");
        s.critical = true;
        s.respawn = false;
        (s, Role::Config)
    };
    let rows: Vec<Row> = vec![
        (
            vec![main("sh")],
            |s| s.exited("main", Exit::Code(42)),
            Outcome::ServiceExit(42),
        ),
        (
            vec![main("sh")],
            |s| s.exited("main", Exit::Signal(9)),
            Outcome::Signaled(9),
        ),
        (
            vec![main("sh")],
            |s| {
                s.feed(Input::Signal(Signal::SIGTERM));
                s.exited("main", Exit::Code(3));
            },
            Outcome::ServiceExit(3),
        ),
        (
            vec![critical(), (svc("other"), Role::Config)],
            |s| {
                s.exited("c", Exit::Code(4));
                s.exited("other", Exit::Signal(15));
            },
            Outcome::ServiceExit(4),
        ),
        (
            vec![(svc("a"), Role::Config)],
            |s| {
                s.feed(Input::Signal(Signal::SIGINT));
                s.exited("a", Exit::Signal(2));
            },
            Outcome::Done,
        ),
        (
            vec![{
                let mut s = svc("once");
                s.respawn = false;
                (s, Role::Config)
            }],
            |s| s.exited("once", Exit::Code(0)),
            Outcome::Done,
        ),
    ];
    for (i, (services, step, want)) in rows.into_iter().enumerate() {
        let mut sim = Sim::new(services);
        step(&mut sim);
        assert_eq!(sim.exit, Some(want), "row {i}");
    }
    // A main command that cannot be run: 127, as shells say.
    let mut core = Core::new(
        vec![main("ghost")],
        CoreOptions {
            shutdown_timeout: Duration::from_secs(9),
            ..CoreOptions::default()
        },
    );
    let fx = first_spawn_not_found(&mut core, "cannot run ghost: No such file or directory");
    assert!(fx.contains(&Effect::Exit(Outcome::NotFound)), "{fx:?}");
    // The last line says why, not only who: `docker run IMAGE typo`.
    assert_eq!(
        core.termination().summary(),
        "exit 127: the main command ended (main: cannot run ghost: No such file or directory)"
    );
}

#[test]
fn reload_keeps_the_unchanged_and_the_launchers_own_sshd() {
    let sshd = {
        let mut s = svc("sshd");
        s.argv = vec!["/usr/sbin/sshd".into(), "-D".into()];
        s
    };
    let keep = svc("keep");
    let mut change = svc("change");
    let drop = svc("drop");
    let mut sim = Sim::new(vec![
        (sshd.clone(), Role::Sshd),
        (keep.clone(), Role::Config),
        (change.clone(), Role::Config),
        (drop, Role::Config),
    ]);
    let before = (sim.pid("sshd"), sim.pid("keep"), sim.pid("change"));
    change.argv = vec!["y".into()];
    let set = |services: Vec<Service>, sshd| ReloadSet {
        services,
        sshd,
        shutdown_timeout: Duration::from_secs(9),
        drain: Duration::ZERO,
    };
    sim.feed(Input::Reloaded {
        conn: Some(1),
        result: Ok(set(vec![keep.clone(), change.clone(), svc("new")], None)),
    });
    let r = sim.replies.pop().expect("reply");
    assert_eq!(
        r.message.as_deref(),
        Some("reloaded: new added, drop removed, change changed")
    );
    assert_eq!(
        sim.pid("sshd"),
        before.0,
        "sshd untouched: ssh: did not change"
    );
    assert_eq!(sim.pid("keep"), before.1);
    // The changed one starts again only once its old self is down.
    assert_eq!(sim.pid("change"), before.2);
    assert!(sim.signals.contains(&(before.2, Signal::SIGTERM)));
    sim.feed(Input::Exited {
        pid: before.2,
        exit: Exit::Signal(15),
        oom: false,
    });
    assert_ne!(sim.pid("change"), before.2);
    // ssh: changed and sshd is no longer wanted.
    sim.feed(Input::Reloaded {
        conn: Some(1),
        result: Ok(set(
            vec![keep.clone(), change.clone(), svc("new")],
            Some(None),
        )),
    });
    let r = sim.replies.pop().expect("reply");
    assert!(r.removed.expect("removed").contains(&"sshd".to_string()));
    assert!(sim.signals.contains(&(before.0, Signal::SIGTERM)));
    // An invalid config changes nothing.
    let n = sim.spawned.len();
    sim.feed(Input::Reloaded {
        conn: Some(1),
        result: Err("mc-launcher.yml:3:5: unknown key".into()),
    });
    let r = sim.replies.pop().expect("reply");
    assert!(!r.ok && r.error.expect("error").contains(":3:5"));
    assert_eq!(sim.spawned.len(), n);
}

#[test]
fn incr_then_reload_of_the_same_file_restarts_nothing() {
    let worker = svc("worker");
    let mut sim = Sim::config(std::slice::from_ref(&worker));
    let r = sim.ctl(Command::Incr {
        name: "worker".into(),
    });
    assert_eq!(r.numprocesses, Some(2));
    assert_eq!(sim.spawned.len(), 2);
    sim.feed(Input::Reloaded {
        conn: Some(1),
        result: Ok(ReloadSet {
            services: vec![worker],
            sshd: None,
            shutdown_timeout: Duration::from_secs(9),
            drain: Duration::ZERO,
        }),
    });
    let r = sim.replies.pop().expect("reply");
    assert_eq!(
        r.message.as_deref(),
        Some("reloaded: none added, none removed, none changed")
    );
    assert!(
        sim.signals.is_empty(),
        "nothing restarted: {:?}",
        sim.signals
    );
    assert_eq!(
        sim.ctl(Command::Decr {
            name: "worker".into()
        })
        .numprocesses,
        Some(1)
    );
    assert_eq!(sim.signals.len(), 1, "the extra process stops");
}

#[test]
fn sshd_follows_the_keys() {
    let mut sim = Sim::config(&[svc("web")]);
    sim.feed(Input::Sshd(Some(svc("sshd"))));
    assert!(
        sim.names_spawned().contains(&"sshd"),
        "first key: sshd starts"
    );
    let pid = sim.pid("sshd");
    sim.feed(Input::Sshd(Some(svc("sshd"))));
    assert_eq!(sim.pid("sshd"), pid, "same keys, same sshd");
    sim.feed(Input::Sshd(None));
    assert!(
        sim.signals.contains(&(pid, Signal::SIGTERM)),
        "last key gone: sshd stops"
    );
    sim.feed(Input::Exited {
        pid,
        exit: Exit::Signal(15),
        oom: false,
    });
    assert!(sim.core.status(sim.now).iter().all(|s| s.name != "sshd"));
    assert_eq!(sim.exit, None, "web still runs");
}

#[test]
fn big_starts_come_in_batches() {
    let mut many = svc("many");
    many.numprocesses = 200;
    let core = Core::new(
        vec![(many, Role::Config)],
        CoreOptions {
            shutdown_timeout: Duration::from_secs(9),
            ..CoreOptions::default()
        },
    );
    let mut core = core;
    let now = Instant::now();
    let fx = core.handle(Input::Tick, clock(now));
    let spawns = fx
        .iter()
        .filter(|e| matches!(e, Effect::Spawn { .. }))
        .count();
    assert_eq!(
        spawns, SPAWN_BATCH,
        "a stop signal can come in between batches"
    );
    // A stop between batches: nothing more is spawned.
    let fx = core.handle(Input::Signal(Signal::SIGTERM), clock(now));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Spawn { .. })));
}

#[test]
fn crash_loop_backs_off_on_the_clock() {
    let mut crashy = svc("crashy");
    crashy.max_retry = Some(2);
    let mut sim = Sim::config(&[crashy]);
    for (i, wait) in [100u64, 200].iter().enumerate() {
        sim.exited("crashy", Exit::Code(1));
        assert_eq!(sim.state("crashy"), StateName::Backoff, "round {i}");
        let due = sim.core.next_deadline().expect("a backoff deadline");
        assert!(due > sim.now && due <= sim.now + Duration::from_millis(*wait));
        sim.now = due;
        sim.feed(Input::Tick);
        assert_eq!(sim.state("crashy"), StateName::Running);
    }
    sim.exited("crashy", Exit::Code(1));
    assert_eq!(sim.state("crashy"), StateName::Failed);
    assert_eq!(
        sim.exit,
        Some(Outcome::Failed),
        "nothing left to supervise, one FAILED"
    );
}

/// Let `bad` crash on each start until it is FAILED.
fn bad_until_failed(sim: &mut Sim) {
    for _ in 0..10 {
        sim.exited("bad", Exit::Code(1));
        if sim.state("bad") == StateName::Failed {
            return;
        }
        let due = sim.core.next_deadline().expect("a backoff deadline");
        sim.now = due;
        sim.feed(Input::Tick);
    }
    panic!("bad never became FAILED");
}

#[test]
fn a_failed_autostart_service_fails_liveness_unless_it_says_ignore() {
    for ignore in [false, true] {
        let mut bad = svc("bad");
        bad.max_retry = Some(2);
        bad.liveness_ignore = ignore;
        let mut sim = Sim::config(&[bad, svc("web")]);
        assert!(sim.health(Health::Live).ok);
        bad_until_failed(&mut sim);
        assert_eq!(sim.state("web"), StateName::Running);
        assert_eq!(sim.exit, None, "web runs on");
        let r = sim.health(Health::Live);
        assert_eq!(r.ok, ignore, "liveness: ignore = {ignore}: {r:?}");
        if !ignore {
            assert!(
                r.error.as_deref().is_some_and(|e| e.contains("bad")),
                "{r:?}"
            );
        }
        assert!(!sim.health(Health::All).ok, "never healthy");
    }
}

#[test]
fn ctl_commands_on_the_core() {
    let mut sim = Sim::config(&[svc("web")]);
    assert!(sim.health(Health::All).ok);
    let r = sim.ctl(Command::Stop {
        name: "ghost".into(),
    });
    assert_eq!(r.error.as_deref(), Some("no such service: ghost"));
    let r = sim.ctl(Command::Start { name: "web".into() });
    assert_eq!(r.error.as_deref(), Some("web is already running"));
    sim.ctl(Command::Stop { name: "web".into() });
    sim.exited("web", Exit::Signal(15));
    assert_eq!(sim.state("web"), StateName::Stopped);
    let r = sim.health(Health::All);
    assert!(!r.ok && r.error.expect("error").contains("web"));
    sim.ctl(Command::Start { name: "web".into() });
    assert_eq!(sim.state("web"), StateName::Running);
    sim.feed(Input::Ctl {
        conn: 1,
        cmd: Command::Reload {},
    });
    assert_eq!(sim.reloads, 1, "the shell is asked to read the config");
    let r = sim.ctl(Command::Quit {});
    assert_eq!(r.message.as_deref(), Some("stopping"));
    let r = sim.ctl(Command::Restart { name: "web".into() });
    assert_eq!(r.error.as_deref(), Some("the launcher is stopping"));
}

fn probed(mut s: Service, period_ms: Option<u64>) -> Service {
    s.ready = Some(Ready {
        check: ReadyCheck::Tcp(HostPort::parse("127.0.0.1:1", None).expect("addr")),
        timeout: Duration::from_secs(5),
        interval: Duration::from_millis(100),
        period: period_ms.map(Duration::from_millis),
        failure_threshold: 2,
    });
    s
}

impl Sim {
    /// Answer the newest probe in flight.
    fn answer(&mut self, ok: bool) {
        let (probe, _) = self.probes.pop().expect("a probe in flight");
        self.feed(Input::ProbeDone { probe, ok });
    }
}

#[test]
fn a_ready_service_that_fails_its_period_probes_is_not_ready_but_not_restarted() {
    let mut sim = Sim::config(&[probed(svc("web"), Some(1000))]);
    sim.answer(true);
    assert!(sim.health(Health::All).ok);
    let pid = sim.pid("web");
    // Probed again every period.
    assert_eq!(
        sim.core.next_deadline(),
        Some(sim.now + Duration::from_secs(1))
    );
    sim.at(1000);
    sim.answer(false);
    assert!(sim.health(Health::All).ok, "one failure is not enough");
    sim.at(2000);
    sim.answer(false);
    let r = sim.health(Health::Ready);
    assert!(!r.ok, "two failures in a row: not ready");
    assert_eq!(sim.state("web"), StateName::Starting, "shown as not ready");
    assert!(sim.health(Health::Live).ok, "still alive");
    assert_eq!(sim.pid("web"), pid, "not restarted");
    assert!(sim.signals.is_empty());
    sim.at(3000);
    sim.answer(true);
    assert!(sim.health(Health::All).ok, "ready again");
}

#[test]
fn a_failing_liveness_probe_restarts_with_backoff_and_says_why() {
    let mut web = svc("web");
    web.live = Some(crate::config::model::Live {
        check: ReadyCheck::Tcp(HostPort::parse("127.0.0.1:1", None).expect("addr")),
        period: Duration::from_secs(1),
        timeout: Duration::from_millis(200),
        failure_threshold: 3,
        initial_delay: Duration::from_secs(2),
    });
    let mut sim = Sim::config(&[web]);
    let pid = sim.pid("web");
    // First probe after initial_delay + one period.
    assert_eq!(
        sim.core.next_deadline(),
        Some(sim.t0 + Duration::from_secs(3))
    );
    assert!(sim.probes.is_empty());
    for (i, t) in [3000u64, 4000, 5000].iter().enumerate() {
        sim.at(*t);
        assert_eq!(sim.probes.len(), 1, "probe {i}");
        sim.answer(false);
    }
    assert_eq!(
        sim.signalled(Signal::SIGTERM),
        ["web"],
        "restarted after 3 failures"
    );
    sim.exited("web", Exit::Signal(15));
    let st = sim.core.status(sim.now);
    assert_eq!(st[0].restart_reason.as_deref(), Some("liveness"));
    assert_eq!(st[0].state, StateName::Backoff, "its usual backoff");
    let due = sim.core.next_deadline().expect("backoff");
    sim.now = due;
    sim.feed(Input::Tick);
    assert_ne!(sim.pid("web"), pid, "a new process");
    assert!(sim.health(Health::Live).ok);
}

#[test]
fn an_unreadable_secret_is_a_failed_start_retried_with_backoff() {
    let mut web = svc("web");
    web.max_retry = Some(3);
    let mut sim = Sim::config(&[web]);
    // The secret goes missing; a restart cannot read it.
    sim.unreadable = vec!["web".into()];
    assert!(sim.ctl(Command::Restart { name: "web".into() }).ok);
    sim.exited("web", Exit::Signal(15));
    sim.replies.clear();
    let st = sim.core.status(sim.now);
    assert_eq!(st[0].state, StateName::Backoff, "not FAILED: retried");
    assert_eq!(
        st[0].reason.as_deref(),
        Some("not started: secret PW: /run/secrets/web: not found")
    );
    assert_eq!(sim.exit, None);
    // Each try is a failed start under the usual backoff, growing.
    let first = sim.core.next_deadline().expect("a retry");
    sim.now = first;
    sim.feed(Input::Tick);
    let second = sim.core.next_deadline().expect("a second retry");
    assert!(second - first > first - sim.t0, "the backoff grows");
    // The file appears: the next try starts it, the reason goes.
    sim.unreadable.clear();
    sim.now = second;
    sim.feed(Input::Tick);
    let st = sim.core.status(sim.now);
    assert_eq!(st[0].state, StateName::Running);
    assert_eq!(st[0].reason, None);
}

#[test]
fn drain_runs_the_hooks_then_waits_then_stops() {
    let mut web = svc("web");
    web.pre_stop = Some(crate::config::model::PreStop {
        argv: vec!["deregister".into()],
        timeout: Duration::from_secs(3),
    });
    let mut opts = options(Duration::from_secs(5), false);
    opts.shutdown_timeout = Duration::from_secs(20);
    let mut sim = Sim::with(vec![(web, Role::Config), (svc("db"), Role::Config)], opts);
    let t0 = sim.t0;
    sim.feed(Input::Signal(Signal::SIGTERM));
    assert_eq!(sim.hooks.len(), 1, "pre_stop runs first");
    assert!(sim.signals.is_empty(), "nothing stops while a hook runs");
    let r = sim.health(Health::Ready);
    assert!(!r.ok, "not ready while draining");
    assert!(sim.health(Health::Live).ok);
    // Plain `ctl health` (a Docker HEALTHCHECK) keeps its meaning: every
    // autostart service running and ready; only --ready fails on a drain.
    let r = sim.health(Health::All);
    assert!(r.ok, "healthy while the services still run: {r:?}");
    sim.now = t0 + Duration::from_secs(1);
    let (hook, _) = sim.hooks[0].clone();
    sim.feed(Input::ProbeDone {
        probe: hook,
        ok: true,
    });
    assert!(sim.signals.is_empty(), "then the drain wait");
    assert_eq!(sim.core.next_deadline(), Some(t0 + Duration::from_secs(6)));
    sim.at(6000);
    let mut got = sim.signalled(Signal::SIGTERM);
    got.sort();
    assert_eq!(got, ["db", "web"], "then the stop");
    sim.exited("web", Exit::Signal(15));
    sim.exited("db", Exit::Signal(15));
    assert_eq!(sim.exit, Some(Outcome::Done));
    let t = sim.core.termination();
    assert_eq!(t.summary(), "exit 0: stopped on request (TERM)");
}

#[test]
fn a_main_that_ends_does_not_drain() {
    let core = Core::new(
        vec![(Service::main(vec!["true".into()]), Role::Main)],
        CoreOptions {
            shutdown_timeout: Duration::from_secs(20),
            drain: Duration::from_secs(5),
            ..CoreOptions::default()
        },
    );
    let mut core = core;
    let now = Instant::now();
    let pid = 7;
    let proc = core
        .handle(Input::Tick, clock(now))
        .into_iter()
        .find_map(|e| match e {
            Effect::Spawn { proc, .. } => Some(proc),
            _ => None,
        })
        .expect("spawn");
    core.handle(Input::Spawned { proc, pid }, clock(now));
    let fx = core.handle(
        Input::Exited {
            pid,
            exit: Exit::Code(3),
            oom: false,
        },
        clock(now),
    );
    assert!(
        fx.contains(&Effect::Exit(Outcome::ServiceExit(3))),
        "{fx:?}"
    );
}

#[test]
fn oom_kills_are_told_apart_and_reported() {
    let mut worker = svc("worker");
    worker.critical = true;
    let mut sim = Sim::config(&[worker, svc("web")]);
    let pid = sim.pid("worker");
    sim.feed(Input::Exited {
        pid,
        exit: Exit::Signal(9),
        oom: true,
    });
    let st = sim.core.status(sim.now);
    let w = st.iter().find(|s| s.name == "worker").expect("worker");
    assert!(w.oom && w.oom_kills == 1);
    sim.exited("web", Exit::Signal(15));
    assert_eq!(
        sim.exit,
        Some(Outcome::Signaled(9)),
        "a critical service killed so: 137"
    );
    let t = sim.core.termination();
    assert_eq!(
        t.summary(),
        "exit 137: critical service ended (worker: killed by KILL, OOM-killed)"
    );
    // A SIGKILL from someone else is not an OOM kill.
    let mut sim = Sim::config(&[svc("a")]);
    let pid = sim.pid("a");
    sim.feed(Input::Exited {
        pid,
        exit: Exit::Signal(9),
        oom: false,
    });
    assert!(!sim.core.status(sim.now)[0].oom);
}

#[test]
fn sd_notify_both_ways() {
    let web = with_check(svc("web"), ReadyCheck::Notify, 5000);
    let mut sim = Sim::with(vec![(web, Role::Config)], options(Duration::ZERO, true));
    assert!(sim.probes.is_empty(), "a notify service is not probed");
    assert!(sim.notes.is_empty(), "not ready yet");
    sim.feed(Input::Notify {
        service: "web".into(),
        message: "STATUS=loading\n".into(),
    });
    assert_eq!(
        sim.core.status(sim.now)[0].status.as_deref(),
        Some("loading")
    );
    sim.feed(Input::Notify {
        service: "web".into(),
        message: "READY=1\nSTATUS=serving".into(),
    });
    assert_eq!(sim.state("web"), StateName::Running);
    assert!(
        sim.notes.iter().any(|n| n.starts_with("READY=1")),
        "{:?}",
        sim.notes
    );
    sim.feed(Input::Signal(Signal::SIGTERM));
    assert!(sim.notes.iter().any(|n| n == "STOPPING=1"));
    // Never saying READY=1 within the timeout is a failure.
    let late = with_check(svc("late"), ReadyCheck::Notify, 500);
    let mut sim = Sim::config(&[late]);
    assert_eq!(
        sim.core.next_deadline(),
        Some(sim.t0 + Duration::from_millis(500))
    );
    sim.at(500);
    assert_eq!(sim.state("late"), StateName::Failed);
}

// ----- live reconfigure (README "Live reconfigure") -------------------------

use crate::config::model::OnReconfigure;
use crate::proc::Job;

fn on_reconf(name: &str, on: OnReconfigure) -> Service {
    let mut s = svc(name);
    s.on_reconfigure = on;
    s
}

fn job(name: &str, timeout_ms: Option<u64>) -> Job {
    Job {
        name: name.into(),
        argv: vec!["step".into()],
        env: Vec::new(),
        timeout: timeout_ms.map(Duration::from_millis),
    }
}

/// Services `reload` (USR2), `restart`, `none` of the config, plus sshd.
fn live_sim() -> Sim {
    let mut reload = on_reconf("reload", OnReconfigure::Reload);
    reload.reload_signal = Signal::SIGUSR2;
    Sim::new(vec![
        (svc("sshd"), Role::Sshd),
        (reload, Role::Config),
        (on_reconf("restart", OnReconfigure::Restart), Role::Config),
        (on_reconf("none", OnReconfigure::None), Role::Config),
    ])
}

fn prepared(sim: &mut Sim, result: Prepared) {
    sim.feed(Input::Prepared { conn: None, result });
}

fn ready(changed: &[&str], steps: Vec<Job>) -> Prepared {
    Prepared::Ready {
        changed: changed.iter().map(|c| c.to_string()).collect(),
        steps,
    }
}

#[test]
fn a_change_reloads_restarts_or_leaves_each_service_as_it_says() {
    let mut sim = live_sim();
    sim.now = sim.t0 + Duration::from_secs(5);
    let before = sim.spawned.clone();
    sim.feed(Input::Ctl {
        conn: 1,
        cmd: Command::Reconfigure {},
    });
    assert_eq!(sim.reconfigures, [false], "the shell's part is asked for");
    assert!(sim.replies.is_empty(), "the answer waits for the outcome");
    sim.feed(Input::Prepared {
        conn: Some(1),
        result: ready(&["template-1"], Vec::new()),
    });
    let reply = sim.replies.pop().expect("answered");
    assert!(reply.ok, "{reply:?}");
    let msg = reply.message.unwrap_or_default();
    assert!(msg.contains("reloaded reload (USR2)"), "{msg}");
    assert!(msg.contains("restarted restart"), "{msg}");
    assert!(!msg.contains("none") && !msg.contains("sshd"), "{msg}");
    // The reload keeps the pid; the restart stops its process first.
    assert_eq!(sim.signalled(Signal::SIGUSR2), ["reload"]);
    assert_eq!(sim.signalled(Signal::SIGTERM), ["restart"]);
    sim.exited("restart", Exit::Signal(15));
    sim.at(6000);
    let new: Vec<&str> = sim.spawned[before.len()..]
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        new,
        ["restart"],
        "only the restart service is spawned again"
    );
    assert_eq!(
        sim.core.reconf.counts,
        ReconfigureCounts {
            ok: 1,
            failed: 0,
            invalid: 0
        }
    );
    let status = sim.reconfigure_state();
    assert_eq!(status.last, "ok");
}

#[test]
fn nothing_changed_touches_nothing() {
    let mut sim = live_sim();
    sim.feed(Input::InputsChanged);
    prepared(&mut sim, ready(&[], Vec::new()));
    assert!(sim.signals.is_empty(), "{:?}", sim.signals);
    let st = sim.reconfigure_state();
    assert_eq!(st.last, "ok");
    assert!(
        st.message.unwrap_or_default().contains("nothing changed"),
        "the log and status say so"
    );
    assert_eq!(sim.core.reconf.counts.ok, 1);
}

#[test]
fn an_invalid_input_changes_nothing_and_stays_shown_until_fixed() {
    let mut sim = live_sim();
    sim.feed(Input::InputsChanged);
    let err = "/v/configuration/pillar.sls:3:1: YAML syntax error";
    prepared(&mut sim, Prepared::Invalid(err.into()));
    assert!(sim.signals.is_empty());
    let st = sim.reconfigure_state();
    assert_eq!(
        (st.last.as_str(), st.error.as_deref()),
        ("invalid", Some(err))
    );
    // Still shown by a later status, until the next reconfigure.
    let st = sim.reconfigure_state();
    assert_eq!(st.last, "invalid");
    sim.feed(Input::InputsChanged);
    assert_eq!(sim.reconfigures, [false, false], "invalid is not a retry");
    prepared(&mut sim, ready(&["template-1"], Vec::new()));
    assert_eq!(sim.reconfigure_state().last, "ok");
    assert_eq!(
        sim.core.reconf.counts,
        ReconfigureCounts {
            ok: 1,
            failed: 0,
            invalid: 1
        }
    );
}

#[test]
fn process_steps_run_one_after_the_other_and_a_failure_is_retried() {
    let mut sim = live_sim();
    let n0 = sim.spawned.len();
    sim.feed(Input::InputsChanged);
    prepared(
        &mut sim,
        ready(&[], vec![job("salt-1", None), job("command-2", None)]),
    );
    let steps =
        |sim: &Sim| -> Vec<String> { sim.spawned[n0..].iter().map(|(n, _)| n.clone()).collect() };
    assert_eq!(steps(&sim), ["salt-1"], "one at a time");
    sim.exited("salt-1", Exit::Code(0));
    assert_eq!(steps(&sim), ["salt-1", "command-2"]);
    sim.exited("command-2", Exit::Code(3));
    // Only the steps' own groups were killed at their ends.
    assert_eq!(
        sim.signalled(Signal::SIGKILL),
        ["salt-1", "command-2"],
        "a failed step touches no service"
    );
    assert_eq!(sim.signals.len(), 2, "{:?}", sim.signals);
    let st = sim.reconfigure_state();
    assert_eq!(st.last, "failed");
    assert!(st.error.unwrap_or_default().contains("command-2"));
    assert!(
        sim.core
            .status(sim.now)
            .iter()
            .all(|s| s.name != "command-2"),
        "a finished step leaves the status table"
    );
    // The next change retries, and its success counts as a change.
    sim.feed(Input::InputsChanged);
    assert_eq!(sim.reconfigures, [false, true]);
    prepared(&mut sim, ready(&[], vec![job("command-2", None)]));
    sim.exited("command-2", Exit::Code(0));
    assert_eq!(sim.signalled(Signal::SIGUSR2), ["reload"]);
    assert_eq!(sim.signalled(Signal::SIGTERM), ["restart"]);
    assert_eq!(
        sim.core.reconf.counts,
        ReconfigureCounts {
            ok: 1,
            failed: 1,
            invalid: 0
        }
    );
    sim.feed(Input::InputsChanged);
    assert_eq!(sim.reconfigures, [false, true, false], "retried once only");
}

#[test]
fn a_step_past_its_timeout_is_stopped_and_fails() {
    let mut sim = live_sim();
    sim.feed(Input::InputsChanged);
    prepared(&mut sim, ready(&[], vec![job("command-1", Some(1000))]));
    assert_eq!(
        sim.core.next_deadline(),
        Some(sim.t0 + Duration::from_millis(1000)),
        "the core wakes for the timeout, for nothing else"
    );
    sim.at(1000);
    assert_eq!(sim.signalled(Signal::SIGTERM), ["command-1"]);
    sim.exited("command-1", Exit::Signal(15));
    let st = sim.reconfigure_state();
    assert_eq!(st.last, "failed");
    assert!(st.error.unwrap_or_default().contains("timed out"));
    assert_eq!(sim.signalled(Signal::SIGUSR2), Vec::<String>::new());
    assert_eq!(sim.core.next_deadline(), None, "idle again");
}

#[test]
fn changes_during_a_reconfigure_make_one_more() {
    let mut sim = live_sim();
    sim.feed(Input::InputsChanged);
    sim.feed(Input::InputsChanged);
    sim.feed(Input::Ctl {
        conn: 7,
        cmd: Command::Reconfigure {},
    });
    assert_eq!(sim.reconfigures, [false], "one at a time");
    prepared(&mut sim, ready(&[], Vec::new()));
    assert_eq!(sim.reconfigures, [false, false], "then one more for all");
    assert!(
        sim.replies.is_empty(),
        "the waiting client gets the next one"
    );
    prepared(&mut sim, ready(&[], Vec::new()));
    assert_eq!(sim.replies.len(), 1);
    assert_eq!(sim.core.reconf.counts.ok, 2);
}

#[test]
fn a_stop_abandons_a_reconfigure_and_its_step() {
    let mut sim = live_sim();
    sim.feed(Input::Ctl {
        conn: 1,
        cmd: Command::Reconfigure {},
    });
    prepared(&mut sim, ready(&[], vec![job("command-1", None)]));
    sim.feed(Input::Signal(Signal::SIGTERM));
    let reply = sim.replies.pop().expect("answered");
    assert!(!reply.ok, "{reply:?}");
    assert!(sim
        .signalled(Signal::SIGTERM)
        .contains(&"command-1".to_string()));
    assert!(sim.signalled(Signal::SIGUSR2).is_empty());
}

#[test]
fn without_a_prepare_phase_there_is_no_reconfigure() {
    let mut sim = Sim::with(
        vec![(svc("a"), Role::Config)],
        CoreOptions {
            can_reconfigure: false,
            ..options(Duration::ZERO, false)
        },
    );
    let r = sim.ctl(Command::Reconfigure {});
    assert!(!r.ok && r.error.unwrap_or_default().contains("no live reconfigure"));
    sim.feed(Input::InputsChanged);
    assert!(sim.reconfigures.is_empty());
}

#[test]
fn metrics_follow_restarts_and_name_every_family() {
    let mut s = Sim::config(&[svc("web"), with_ready(svc("db\"x"), 60_000)]);
    s.core.reconf.counts.failed = 2;
    s.core.start_time_unix = 1_790_000_000.5;
    let text = |s: &mut Sim| s.ctl(Command::Metrics {}).metrics.unwrap_or_default();
    let first = text(&mut s);
    for family in [
        "# TYPE mc_service_up gauge",
        "# TYPE mc_service_ready gauge",
        "# TYPE mc_service_restarts_total counter",
        "# TYPE mc_service_last_exit_code gauge",
        "# TYPE mc_service_oom_kills_total counter",
        "# TYPE mc_probe_failures_total counter",
        "# TYPE mc_reconfigure_total counter",
        "# TYPE mc_launcher_start_time_seconds gauge",
        "mc_service_up{service=\"web\"} 1\n",
        "mc_service_ready{service=\"db\\\"x\"} 0\n",
        "mc_probe_failures_total{service=\"db\\\"x\",probe=\"ready\"} 0\n",
        "mc_reconfigure_total{result=\"ok\"} 0\n",
        "mc_reconfigure_total{result=\"failed\"} 2\n",
        "mc_reconfigure_total{result=\"invalid\"} 0\n",
        "mc_launcher_start_time_seconds 1790000000.5\n",
    ] {
        assert!(first.contains(family), "{family} missing from\n{first}");
    }
    assert!(!first.contains("mc_service_last_exit_code{"), "{first}");
    s.at(2000);
    s.exited("web", Exit::Code(3));
    s.at(5000);
    let later = text(&mut s);
    assert!(
        later.contains("mc_service_restarts_total{service=\"web\"} 1\n"),
        "{later}"
    );
    assert!(
        later.contains("mc_service_last_exit_code{service=\"web\"} 3\n"),
        "{later}"
    );
}

// ----- scheduled jobs and file watches (README "Scheduled jobs", "File watches")

use crate::config::model::{OnChange, Schedule, Watch, When};

/// A job on `when`, pausing `pause`.
fn job_svc(name: &str, when: When, pause: &[&str], timeout_ms: Option<u64>) -> Service {
    let mut s = svc(name);
    s.schedule = Some(Schedule {
        when,
        run_on_start: false,
        pause: pause.iter().map(|p| p.to_string()).collect(),
        timeout: timeout_ms.map(Duration::from_millis),
    });
    s
}

impl Sim {
    /// Services of the config, with the wall clock at `unix` at the start.
    fn at_wall(services: &[Service], unix: i64) -> Sim {
        let t0 = Instant::now();
        let core = Core::new(
            services
                .iter()
                .cloned()
                .map(|s| (s, Role::Config))
                .collect(),
            options(Duration::ZERO, false),
        );
        Sim::started_at_wall(core, t0, unix as f64)
    }

    fn job(&self, name: &str) -> crate::ctl::proto::JobState {
        self.row(name)
            .job
            .unwrap_or_else(|| panic!("{name} is no job"))
    }

    fn ms(&self, t: Instant) -> u64 {
        t.duration_since(self.t0).as_millis() as u64
    }
}

#[test]
fn a_job_runs_at_its_rate_pauses_around_each_run_and_never_overlaps() {
    let gc = job_svc("gc", When::Every(Duration::from_secs(1)), &["web"], None);
    let mut sim = Sim::at_wall(&[svc("web"), gc, svc("other")], 1_800_000_000);
    assert_eq!(
        sim.names_spawned(),
        ["web", "other"],
        "a job waits for its time"
    );
    assert_eq!(sim.state("gc"), StateName::Scheduled);
    // The loop sleeps until the run is due: no deadline before.
    assert_eq!(sim.core.next_deadline().map(|d| sim.ms(d)), Some(1000));
    let web1 = sim.pid("web");
    sim.at(1000);
    // The paused service is stopped first; the job waits for it.
    assert_eq!(sim.signalled(Signal::SIGTERM), ["web"]);
    assert_eq!(sim.names_spawned(), ["web", "other"]);
    assert!(sim.job("gc").running);
    sim.now = sim.t0 + Duration::from_millis(1050);
    sim.exited("web", Exit::Code(0));
    assert_eq!(sim.names_spawned(), ["web", "other", "gc"]);
    assert_eq!(sim.job("gc").paused, ["web"]);
    // Due again while it runs: skipped and counted, no second process.
    assert_eq!(sim.core.next_deadline().map(|d| sim.ms(d)), Some(2000));
    sim.at(2000);
    assert_eq!(sim.names_spawned(), ["web", "other", "gc"]);
    assert_eq!(sim.job("gc").runs.skipped, 1);
    sim.now = sim.t0 + Duration::from_millis(2500);
    sim.exited("gc", Exit::Code(0));
    // The paused service comes back; the other was never touched.
    assert_eq!(sim.names_spawned(), ["web", "other", "gc", "web"]);
    assert_ne!(sim.pid("web"), web1);
    let j = sim.job("gc");
    assert_eq!((j.runs.ok, j.runs.failed, j.runs.skipped), (1, 0, 1));
    assert_eq!(j.last_result.as_deref(), Some("ok"));
    assert_eq!(j.last_exit.as_deref(), Some("exit 0"));
    assert_eq!(j.last_run_unix, Some(1_800_000_001.0));
    assert_eq!(j.next_run_unix, Some(1_800_000_003.0));
    // Fixed rate from the previous run's due time, not its end.
    assert_eq!(sim.core.next_deadline().map(|d| sim.ms(d)), Some(3000));
    sim.at(3000);
    sim.now = sim.t0 + Duration::from_millis(3010);
    sim.exited("web", Exit::Code(0));
    sim.exited("gc", Exit::Code(3));
    let j = sim.job("gc");
    assert_eq!((j.runs.ok, j.runs.failed), (1, 1));
    assert_eq!(j.last_exit.as_deref(), Some("exit 3"));
    assert!(sim.signalled(Signal::SIGTERM).iter().all(|n| n == "web"));
    let m = sim.core.metrics_text();
    for line in [
        "mc_job_runs_total{service=\"gc\",result=\"ok\"} 1",
        "mc_job_runs_total{service=\"gc\",result=\"failed\"} 1",
        "mc_job_runs_total{service=\"gc\",result=\"skipped\"} 1",
        "mc_job_last_run_timestamp_seconds{service=\"gc\"} 1800000003",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    // Jobs are not services that should be up.
    assert!(sim.health(Health::All).ok);
}

#[test]
fn a_run_past_its_timeout_is_stopped_then_killed_and_counted() {
    let mut slow = job_svc("slow", When::Reboot, &[], Some(500));
    slow.graceful_timeout = Duration::from_secs(2);
    let mut sim = Sim::at_wall(&[slow], 1_800_000_000);
    assert_eq!(sim.names_spawned(), ["slow"], "@reboot runs at the start");
    assert_eq!(sim.core.next_deadline().map(|d| sim.ms(d)), Some(500));
    sim.at(500);
    assert_eq!(sim.signalled(Signal::SIGTERM), ["slow"]);
    assert_eq!(sim.core.next_deadline().map(|d| sim.ms(d)), Some(2500));
    sim.at(2500);
    assert_eq!(sim.signalled(Signal::SIGKILL), ["slow"]);
    sim.exited("slow", Exit::Signal(9));
    let j = sim.job("slow");
    assert_eq!(
        (j.runs.timeout, j.last_result.as_deref()),
        (1, Some("timeout"))
    );
    assert_eq!(j.next_run, None, "@reboot runs once");
    assert_eq!(sim.state("slow"), StateName::Stopped);
    // `ctl start` runs it again now; a second one while it runs is refused.
    assert!(
        sim.ctl(Command::Start {
            name: "slow".into()
        })
        .ok
    );
    assert_eq!(sim.names_spawned(), ["slow", "slow"]);
    assert!(
        !sim.ctl(Command::Start {
            name: "slow".into()
        })
        .ok
    );
}

#[test]
fn a_cron_job_wakes_the_loop_at_its_wall_clock_time_in_its_zone() {
    // 2026-03-29T00:59:30Z: 01:59:30 in Paris, half a minute before the
    // clock jumps from 02:00 to 03:00.
    let paris = crate::cron::zone(Some("Europe/Paris")).expect("tzdata");
    let cron = |text: &str| When::Cron {
        text: text.into(),
        cron: crate::cron::Cron::parse(text).expect("cron"),
        tz: paris.clone(),
    };
    let start = 1_774_745_970;
    let mut sim = Sim::at_wall(
        &[
            job_svc("skipped-time", cron("30 2 * * *"), &[], None),
            job_svc("hourly", cron("30 * * * *"), &[], None),
        ],
        start,
    );
    // 02:30 never comes today: it runs when the clock jumps, 30 s from now.
    assert_eq!(sim.core.next_deadline().map(|d| sim.ms(d)), Some(30_000));
    assert_eq!(
        sim.job("skipped-time").next_run.as_deref(),
        Some("2026-03-29T01:00:00Z")
    );
    // An `*` hour: 03:30 CEST, the next real half hour.
    assert_eq!(
        sim.job("hourly").next_run.as_deref(),
        Some("2026-03-29T01:30:00Z")
    );
    sim.at(29_999);
    assert!(sim.spawned.is_empty(), "not before its time");
    sim.at(30_000);
    assert_eq!(sim.names_spawned(), ["skipped-time"]);
    sim.exited("skipped-time", Exit::Code(0));
    assert_eq!(
        sim.job("skipped-time").next_run.as_deref(),
        Some("2026-03-30T00:30:00Z"),
        "02:30 CEST tomorrow"
    );
    // The wall clock set back by a minute while the loop slept: the run
    // waits for the wall clock, not the monotonic one.
    sim.set_wall(
        sim.t0 + Duration::from_millis(30_000),
        (start + 30 - 60) as f64,
    );
    sim.at(30_000 + 30 * 60_000);
    assert_eq!(
        sim.names_spawned(),
        ["skipped-time"],
        "the clock says 01:29"
    );
    assert_eq!(
        sim.core.next_deadline().map(|d| sim.ms(d)),
        Some(30_000 + 31 * 60_000)
    );
    sim.at(30_000 + 31 * 60_000);
    assert_eq!(sim.names_spawned(), ["skipped-time", "hourly"]);
    sim.exited("hourly", Exit::Code(0));
    assert_eq!(
        sim.job("hourly").next_run.as_deref(),
        Some("2026-03-29T02:30:00Z")
    );
    // The wall clock jumps an hour ahead (a host resumed): the next input
    // finds the run due, whatever the monotonic deadline says.
    let t = sim.t0 + Duration::from_millis(30_000 + 32 * 60_000);
    sim.set_wall(t, 1_774_755_000.0);
    sim.at(30_000 + 32 * 60_000);
    assert_eq!(sim.names_spawned(), ["skipped-time", "hourly", "hourly"]);
}

#[test]
fn a_watched_change_is_debounced_then_reloads_or_restarts_that_service_only() {
    let watched = |name: &str, on_change: OnChange| {
        let mut s = svc(name);
        s.watch = Some(Watch {
            paths: vec!["/etc/tls/cert.pem".into()],
            on_change,
            debounce: Duration::from_millis(500),
        });
        s
    };
    let mut sim = Sim::config(&[
        watched("nginx", OnChange::Reload),
        watched("app", OnChange::Restart),
        svc("other"),
    ]);
    let (nginx, app, other) = (sim.pid("nginx"), sim.pid("app"), sim.pid("other"));
    assert_eq!(sim.core.next_deadline(), None, "idle: nothing to wake for");
    sim.feed(Input::PathsChanged {
        service: "nginx".into(),
    });
    sim.now = sim.t0 + Duration::from_millis(300);
    sim.feed(Input::PathsChanged {
        service: "nginx".into(),
    });
    // A burst is one change, 500 ms after its last event.
    assert_eq!(sim.core.next_deadline().map(|d| sim.ms(d)), Some(800));
    sim.at(799);
    assert!(sim.signals.is_empty());
    sim.at(800);
    assert_eq!(sim.signals, [(nginx, Signal::SIGHUP)], "reloaded, pid kept");
    assert_eq!(sim.core.next_deadline(), None);
    sim.feed(Input::PathsChanged {
        service: "app".into(),
    });
    sim.at(1300);
    assert_eq!(sim.signalled(Signal::SIGTERM), ["app"]);
    sim.exited("app", Exit::Code(0));
    assert_ne!(sim.pid("app"), app, "restarted: a new pid");
    assert_eq!((sim.pid("nginx"), sim.pid("other")), (nginx, other));
    let row = sim.row("app");
    assert_eq!(row.restart_reason.as_deref(), Some("watch"));
}

#[test]
fn a_run_stopped_or_removed_while_its_pause_waits_brings_the_service_back() {
    let gc = || job_svc("gc", When::Every(Duration::from_secs(1)), &["web"], None);
    let mut sim = Sim::at_wall(&[svc("web"), gc()], 1_800_000_000);
    sim.at(1000);
    assert_eq!(sim.signalled(Signal::SIGTERM), ["web"]);
    // Stopped by hand while web is still stopping: no run, web comes back.
    assert!(sim.ctl(Command::Stop { name: "gc".into() }).ok);
    sim.exited("web", Exit::Code(0));
    assert_eq!(sim.names_spawned(), ["web", "web"], "gc never ran");
    let j = sim.job("gc");
    assert_eq!((j.runs.failed, j.running), (1, false));
    // The next run; the job is removed by a reload while web stops.
    sim.at(2000);
    assert_eq!(sim.signalled(Signal::SIGTERM), ["web", "web"]);
    sim.feed(Input::Reloaded {
        conn: None,
        result: Ok(ReloadSet {
            services: vec![svc("web")],
            sshd: None,
            shutdown_timeout: Duration::from_secs(9),
            drain: Duration::ZERO,
        }),
    });
    sim.exited("web", Exit::Code(0));
    assert_eq!(sim.names_spawned(), ["web", "web", "web"]);
    assert_eq!(sim.state("web"), StateName::Running);
    assert!(sim.core.status(sim.now).iter().all(|s| s.name != "gc"));
}

#[test]
fn a_stop_during_a_burst_spawns_nothing_more() {
    let mut many = svc("many");
    many.numprocesses = 500;
    let mut core = Core::new(vec![(many, Role::Config)], options(Duration::ZERO, false));
    let now = Instant::now();
    let procs: Vec<ProcId> = core
        .handle(Input::Tick, clock(now))
        .into_iter()
        .filter_map(|e| match e {
            Effect::Spawn { proc, .. } => Some(proc),
            _ => None,
        })
        .collect();
    assert_eq!(procs.len(), SPAWN_BATCH);
    // The stop comes while the batch's outcomes are still to be told.
    let mut later = core.handle(Input::Signal(Signal::SIGTERM), clock(now));
    for (i, proc) in procs.into_iter().enumerate() {
        let pid = 1000 + i as i32;
        later.extend(core.handle(Input::Spawned { proc, pid }, clock(now)));
        later.extend(core.handle(
            Input::Exited {
                pid,
                exit: Exit::Signal(Signal::SIGTERM as i32),
                oom: false,
            },
            clock(now),
        ));
    }
    later.extend(core.handle(Input::Tick, clock(now + Duration::from_millis(10))));
    let spawns = later
        .iter()
        .filter(|e| matches!(e, Effect::Spawn { .. }))
        .count();
    assert_eq!(spawns, 0, "spawned after the stop began");
    assert!(later.iter().any(|e| matches!(e, Effect::Exit(_))));
}

#[test]
fn a_cron_run_handled_a_hair_before_its_wall_time_runs_once() {
    let every_minute = When::Cron {
        text: "* * * * *".into(),
        cron: crate::cron::Cron::parse("* * * * *").expect("cron"),
        tz: crate::cron::Zone::utc(),
    };
    // Half a minute past a whole minute.
    let start = 1_800_000_030;
    let mut sim = Sim::at_wall(&[job_svc("tick", every_minute, &[], None)], start);
    assert_eq!(sim.core.next_deadline().map(|d| sim.ms(d)), Some(30_000));
    // The wall clock runs 0.2 s behind the monotonic one by then.
    let t = sim.t0 + Duration::from_millis(30_000);
    sim.set_wall(t, (start + 30) as f64 - 0.2);
    sim.at(30_000);
    assert_eq!(sim.names_spawned(), ["tick"]);
    sim.exited("tick", Exit::Code(0));
    assert_eq!(
        sim.job("tick").next_run_unix,
        Some((start + 90) as f64),
        "the next minute, not the same one again"
    );
    sim.at(30_300);
    assert_eq!(sim.names_spawned(), ["tick"]);
}

#[test]
fn logs_are_read_by_the_shell_for_a_known_service_or_everyone_even_while_stopping() {
    let mut sim = Sim::config(&[svc("web")]);
    let logs = |name: Option<&str>| Command::Logs {
        name: name.map(str::to_string),
        follow: true,
        lines: 10,
    };
    let r = sim.ctl(logs(Some("nosuch")));
    assert_eq!(r.error.as_deref(), Some("no such service: nosuch"));
    assert!(sim.log_reads.is_empty());
    sim.feed(Input::Ctl {
        conn: 1,
        cmd: logs(Some("web")),
    });
    sim.feed(Input::Ctl {
        conn: 1,
        cmd: logs(None),
    });
    assert_eq!(sim.log_reads, vec![Some("web".to_string()), None]);
    assert!(
        sim.replies.is_empty(),
        "the shell answers: {:?}",
        sim.replies
    );
    sim.ctl(Command::Quit {});
    sim.feed(Input::Ctl {
        conn: 1,
        cmd: logs(None),
    });
    assert_eq!(
        sim.log_reads.len(),
        3,
        "a stopping launcher still shows its logs"
    );
}

// ----- steps: a prepare step alone, a live reconfigure's step ---------------

use crate::proc::JobEnd;

/// A core that runs `job` alone, as the prepare phase does.
fn step_alone(job: &Job) -> Sim {
    Sim::started(Core::for_step(job), Instant::now())
}

#[test]
fn a_step_alone_ends_the_run_with_its_end() {
    // (how the step ends, what the run reports)
    let cases: Vec<(Exit, JobEnd)> = vec![
        (Exit::Code(0), JobEnd::Exited(Exit::Code(0))),
        (Exit::Code(3), JobEnd::Exited(Exit::Code(3))),
        (Exit::Signal(9), JobEnd::Exited(Exit::Signal(9))),
    ];
    for (exit, want) in cases {
        let mut sim = step_alone(&job("salt-1", None));
        assert_eq!(sim.names_spawned(), ["salt-1"]);
        assert_eq!(sim.core.next_deadline(), None, "no timeout, no wake-up");
        sim.exited("salt-1", exit);
        assert_eq!(sim.step_ends, [("salt-1".to_string(), want)]);
        assert!(sim.exit.is_some(), "the run ends with the step");
    }
}

#[test]
fn a_step_alone_past_its_timeout_is_stopped_and_timed_out() {
    let mut sim = step_alone(&job("command-1", Some(1000)));
    assert_eq!(
        sim.core.next_deadline(),
        Some(sim.t0 + Duration::from_millis(1000)),
        "the core owns the step's timeout"
    );
    sim.at(999);
    assert!(sim.signals.is_empty(), "{:?}", sim.signals);
    sim.at(1000);
    assert_eq!(sim.signalled(Signal::SIGTERM), ["command-1"]);
    assert_eq!(
        sim.core.next_deadline(),
        Some(sim.t0 + Duration::from_millis(1000) + STEP_GRACE),
        "then KILL after the grace"
    );
    sim.at(1000 + STEP_GRACE.as_millis() as u64);
    assert!(sim
        .signalled(Signal::SIGKILL)
        .contains(&"command-1".to_string()));
    sim.exited("command-1", Exit::Signal(9));
    assert_eq!(sim.step_ends, [("command-1".to_string(), JobEnd::TimedOut)]);
    assert!(sim.exit.is_some());
}

#[test]
fn a_stop_signal_interrupts_a_step_alone() {
    let mut sim = step_alone(&job("salt-1", Some(60_000)));
    sim.feed(Input::Signal(Signal::SIGINT));
    assert_eq!(sim.signalled(Signal::SIGTERM), ["salt-1"]);
    assert!(sim.step_ends.is_empty(), "not over before it ended");
    sim.exited("salt-1", Exit::Signal(15));
    assert_eq!(
        sim.step_ends,
        [("salt-1".to_string(), JobEnd::Interrupted(Signal::SIGINT))]
    );
}

#[test]
fn a_second_stop_signal_kills_a_step_alone_now() {
    let mut sim = step_alone(&job("salt-1", None));
    sim.feed(Input::Signal(Signal::SIGTERM));
    assert!(sim.signalled(Signal::SIGKILL).is_empty());
    sim.feed(Input::Signal(Signal::SIGTERM));
    assert_eq!(sim.signalled(Signal::SIGKILL), ["salt-1"]);
}

#[test]
fn a_step_that_cannot_start_ends_not_started() {
    let mut core = Core::for_step(&job("bad", None));
    let fx = first_spawn_not_found(&mut core, "bad: not found");
    assert!(fx.contains(&Effect::StepEnded {
        name: "bad".into(),
        end: JobEnd::NotStarted("bad: not found".into()),
    }));
    assert!(fx.iter().any(|e| matches!(e, Effect::Exit(_))));
}

#[test]
fn every_step_leaves_nothing_in_its_group() {
    // One rule for a prepare step and a live reconfigure's step alike:
    // when its process ends, its group is killed (what it started there).
    let mut alone = step_alone(&job("salt-1", None));
    alone.exited("salt-1", Exit::Code(0));
    assert_eq!(alone.signalled(Signal::SIGKILL), ["salt-1"]);

    let mut sim = live_sim();
    sim.feed(Input::InputsChanged);
    prepared(&mut sim, ready(&[], vec![job("command-1", None)]));
    sim.exited("command-1", Exit::Code(0));
    assert_eq!(sim.signalled(Signal::SIGKILL), ["command-1"]);
    // The services are not the step: a service's end kills nothing.
    let mut svcs = Sim::config(&[svc("web")]);
    svcs.exited("web", Exit::Code(0));
    assert!(svcs.signalled(Signal::SIGKILL).is_empty());
}
