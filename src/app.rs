//! The application: logging, the dispatch of subcommands, `check` and
//! `render`, and the wiring of the prepare phase into the supervisor (the
//! reload function, the key-watch callback). Layer 4: the only place that
//! sees every other module.

use crate::cli::{parse, usage, Args, Command, HelpTopic, Parsed};
use crate::config::model::PrepareStep;
use crate::config::{self, Config, LoadOptions, Service};
use crate::error::{self, Diag, Outcome};
use crate::proc::record::Framing;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

fn init_logging(verbosity: i32) {
    let level = match verbosity {
        i32::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let mut b = env_logger::Builder::new();
    b.parse_filters(level);
    if let Ok(spec) = std::env::var("MC_LOG") {
        b.parse_filters(&spec);
    }
    b.format(|f, rec| {
        // `mc-launcher: warning: …`, or a JSON record with `log.format:
        // json`, split at `log.max_line` like a service's lines.
        let mut out = Vec::with_capacity(128);
        let msg = rec.args().to_string();
        let framing = crate::proc::output::writer().launcher_framing();
        crate::proc::record::launcher_line(framing, rec.level(), None, &msg, &mut out);
        // `ctl logs` reads the text form, whatever the log's format.
        let text = Framing {
            format: crate::config::model::LogFormat::Text,
            ..framing
        };
        if framing == text {
            crate::proc::output::logs().push_launcher(&out);
        } else {
            let mut line = Vec::with_capacity(msg.len() + 32);
            crate::proc::record::launcher_line(text, rec.level(), None, &msg, &mut line);
            crate::proc::output::logs().push_launcher(&line);
        }
        f.write_all(&out)
    });
    // Through the output writer: never blocking the loop, never
    // interleaving with a service's lines (README "Output").
    b.target(env_logger::Target::Pipe(Box::new(
        crate::proc::output::QueueWriter(crate::proc::output::Dest::Stderr),
    )));
    let _ = b.try_init();
}

/// The launcher's own lines take `log`'s framing from now on, and `ctl
/// logs` keeps `log.buffer` bytes per source (at the start, at each reload).
fn use_log_config(log: &crate::config::model::LogCfg) {
    crate::proc::output::writer().set_launcher_framing(Framing::of(log));
    crate::proc::output::logs().set_capacity(log.buffer);
}

/// What is queued for the launcher's output is written before it exits,
/// unless whoever reads it has stalled (then it is given up after a while).
const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// Entry point of the binary: returns the exit status, the only place the
/// outcome becomes a number.
pub fn main() -> i32 {
    let outcome = dispatch();
    crate::proc::output::writer().flush(FINAL_FLUSH);
    outcome.exit_code()
}

fn dispatch() -> Outcome {
    // Our own supervisor's sd_notify socket is ours alone: children must
    // not see it (a notify service gets the launcher's socket instead).
    // Read before any thread exists, then removed.
    let notify_socket = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|v| !v.is_empty());
    std::env::remove_var("NOTIFY_SOCKET");
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args = match parse(argv, &|k| std::env::var(k).ok()) {
        Ok(Parsed::Args(a)) => a,
        Ok(Parsed::Help(topic)) => {
            match topic {
                HelpTopic::Main => print!("{}", usage()),
                HelpTopic::Ctl => print!("{}", crate::cli::ctl_usage()),
            }
            return Outcome::Done;
        }
        Ok(Parsed::Completion(shell)) => {
            print!("{}", crate::cli::complete::script(shell));
            return Outcome::Done;
        }
        Ok(Parsed::Version) => {
            print!("{}", crate::cli::version());
            return Outcome::Done;
        }
        Err(msg) => {
            eprintln!("mc-launcher: {msg}\n\n{}", usage());
            return Outcome::Usage;
        }
    };
    init_logging(args.verbosity);
    let opts = LoadOptions {
        config: args.config.clone(),
        root: args.root.clone(),
        project: args.project.clone(),
        profiles: args.profiles.clone(),
    };
    let loaded = match config::load(&opts) {
        Ok(l) => l,
        Err(diags) if args.command == Command::Ctl => {
            // The client only needs the socket path: fall back to defaults.
            log::debug!(
                "config not loaded ({} error(s)); using default socket paths",
                diags.len()
            );
            let root = opts.root.clone().unwrap_or_else(|| PathBuf::from("/srv"));
            config::Loaded {
                config: Config::plain(root, opts.project.clone()),
                rendered: None,
                warnings: Vec::new(),
            }
        }
        Err(diags) if args.command == Command::Run => {
            error::report(&diags);
            // The launcher's end, for the orchestrator (the config could
            // not say where: the default path).
            let first = diags.first();
            let report = error::Termination {
                reason: "invalid input".into(),
                subject: first.map(|d| d.file.display().to_string()),
                how: first.map(ToString::to_string),
                status: Outcome::InvalidInput,
                ..Default::default()
            };
            let path = std::path::Path::new(config::DEFAULT_TERMINATION_LOG);
            crate::fsutil::write_termination_log(path, None, &report);
            return Outcome::InvalidInput;
        }
        Err(diags) => {
            error::report(&diags);
            if args.command == Command::Check {
                // Its verdict line in every case.
                println!("{}", verdict(diags.len(), 0));
            }
            return Outcome::InvalidInput;
        }
    };
    if matches!(args.command, Command::Run | Command::Prepare) {
        // From here on, the launcher's lines and the services' take the
        // configured form (before, the config's own errors were text).
        use_log_config(&loaded.config.log);
    }
    match args.command {
        Command::Render => render(&loaded),
        Command::Check => check(&loaded.config, &loaded.warnings, &args),
        Command::Run => run(loaded.config, &loaded.warnings, &args, opts, notify_socket),
        Command::Prepare => prepare_only(&loaded.config, &loaded.warnings, &args),
        Command::Ctl => crate::ctl::client::client(&loaded.config, &args.ctl),
    }
}

fn render(loaded: &config::Loaded) -> Outcome {
    match &loaded.rendered {
        Some(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
        None => eprintln!("mc-launcher: no config file found: nothing to render"),
    }
    Outcome::Done
}

/// Commands of services that cannot be found on PATH or are not executable.
fn command_problems(cfg: &Config) -> Vec<Diag> {
    let mut out = Vec::new();
    for s in &cfg.services {
        let Some(prog) = s.argv.first() else { continue };
        if let Err(e) = which::which(prog) {
            let file = cfg.file.clone().unwrap_or_default();
            out.push(Diag::new(
                &file,
                s.origin.pos,
                format!("service {}: command {prog}: {e}", s.name),
            ));
        }
    }
    out
}

fn check(cfg: &Config, warnings: &[Diag], args: &Args) -> Outcome {
    let mut problems = command_problems(cfg);
    problems.extend(crate::prepare::phase::check(cfg));
    // What `run` would only warn about (unsupported circus options) fails
    // `check`: nothing is dropped silently.
    problems.extend(warnings.iter().cloned());
    let mut out = String::new();
    let file = cfg
        .file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(none: plain init)".into());
    out.push_str(&format!("config:   {file}\n"));
    out.push_str(&format!(
        "project:  {}\n",
        cfg.project.as_deref().unwrap_or("(none)")
    ));
    out.push_str(&format!("root:     {}\n", cfg.root.display()));
    out.push_str("paths:\n");
    for (k, v) in [
        ("salt", &cfg.paths.salt),
        ("project", &cfg.paths.project),
        ("pillar", &cfg.paths.pillar),
        ("volume", &cfg.paths.volume),
        ("state", &cfg.paths.state),
    ] {
        out.push_str(&format!("  {k:<8} {}\n", v.display()));
    }
    out.push_str("prepare:\n");
    for step in PrepareStep::ALL {
        let skipped = args.skip.contains(&step);
        out.push_str(&crate::prepare::step::describe(step, cfg, skipped));
    }
    let services = services_with_main(cfg, &args.cmd);
    out.push_str("services (start order):\n");
    for name in crate::supervisor::plan::start_names(&services) {
        let svc = services.iter().find(|s| s.name == name);
        let note = match svc {
            Some(s) if !config::inputs::enabled(s, &args.profiles) => format!(
                " (not started: profiles {}; active: {})",
                s.profiles.join(", "),
                if args.profiles.is_empty() {
                    "none".to_string()
                } else {
                    args.profiles.join(", ")
                }
            ),
            _ => String::new(),
        };
        out.push_str(&format!("  - {name}{note}\n"));
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
    error::report(&problems);
    let mut errors = problems.len();
    let mut warnings = 0;
    // Env files, secrets and credentials: paths and names only, never a value.
    let (env_errors, env_warnings) = crate::proc::envfile::check(cfg, &cfg.services);
    for e in &env_errors {
        eprintln!("mc-launcher: error: {e}");
    }
    for w in &env_warnings {
        eprintln!("mc-launcher: warning: {w}");
    }
    errors += env_errors.len();
    warnings += env_warnings.len();
    // The paths the prepare phase would write, tested as `run` tests them:
    // the same message, beforehand.
    if cfg.file.is_some() || cfg.project.is_some() {
        let pf = crate::prepare::phase::preflight(cfg, &args.skip);
        for w in &pf.warnings {
            eprintln!("mc-launcher: warning: {w}");
        }
        warnings += pf.warnings.len();
        if let Some(m) = pf.message() {
            eprintln!("mc-launcher: error: {m}");
            errors += pf.problems.len();
        }
    }
    if cfg.shutdown.timeout >= DOCKER_STOP_KILL && !cfg.shutdown.from_env {
        eprintln!(
            "mc-launcher: warning: shutdown.timeout is {}: docker stop kills after 10 s unless told otherwise; lower it, or run with `docker stop -t` / `--stop-timeout` and set MC_SHUTDOWN_TIMEOUT (Kubernetes: below terminationGracePeriodSeconds)",
            crate::units::fmt_duration(cfg.shutdown.timeout)
        );
        warnings += 1;
    }
    println!("{}", verdict(errors, warnings));
    if errors == 0 {
        Outcome::Done
    } else {
        Outcome::InvalidInput
    }
}

/// `docker stop` sends SIGKILL after this long unless told otherwise.
const DOCKER_STOP_KILL: std::time::Duration = std::time::Duration::from_secs(10);

/// The last line of `check`.
fn verdict(errors: usize, warnings: usize) -> String {
    let w = if warnings > 0 {
        format!("{warnings} warning(s)")
    } else {
        String::new()
    };
    match (errors, w.is_empty()) {
        (0, true) => "check: OK".into(),
        (0, false) => format!("check: OK, {w}"),
        (n, true) => format!("check: {n} error(s)"),
        (n, false) => format!("check: {n} error(s), {w}"),
    }
}

/// The configured services plus the main one from the command line.
fn services_with_main(cfg: &Config, cmd: &[String]) -> Vec<Service> {
    let mut services = cfg.services.clone();
    if !cmd.is_empty() {
        services.push(Service::main(cmd.to_vec()));
    }
    services
}

fn signal_source() -> Result<crate::signals::SignalSource, Outcome> {
    // Signals have been blocked since the first instruction; from here on
    // they are read, never lost.
    crate::signals::SignalSource::new().map_err(|e| {
        eprintln!("mc-launcher: cannot read signals: {e}");
        Outcome::Failed
    })
}

/// Whether the prepare phase runs: with a config file, or with the original
/// launcher's arguments for a known project (its makina defaults then apply:
/// the volume's pillar override and keys, as `launch.sh` did).
fn prepares(cfg: &Config, args: &Args) -> bool {
    cfg.file.is_some() || (args.original && cfg.project.is_some())
}

/// The prepare phase's children run through the supervisor's loop; stop
/// signals between steps are read here.
struct LoopJobs<'a> {
    signals: &'a mut crate::signals::SignalSource,
    /// The last job: its name, how it ended, its last stderr lines.
    last: Option<(String, crate::proc::JobEnd, Vec<String>)>,
}

impl crate::prepare::Jobs for LoopJobs<'_> {
    fn run(&mut self, cfg: &Config, job: crate::proc::Job) -> crate::proc::JobEnd {
        let name = job.name.clone();
        let (end, tail) = crate::supervisor::run_job(cfg, self.signals, job);
        self.last = Some((name, end.clone(), tail));
        end
    }

    fn stop_requested(&mut self) -> Option<nix::sys::signal::Signal> {
        use nix::sys::signal::Signal;
        let mut stop = None;
        for r in self.signals.drain() {
            match r.signal {
                Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                    stop.get_or_insert(r.signal);
                }
                Signal::SIGCHLD => {
                    crate::proc::reap::reap_all(|_, _| {});
                }
                other => log::debug!(
                    "ignoring {} during the prepare phase",
                    crate::signals::short_name(other)
                ),
            }
        }
        stop
    }
}

fn prepare_only(cfg: &Config, warnings: &[Diag], args: &Args) -> Outcome {
    for w in warnings {
        log::warn!("{w}");
    }
    let mut signals = match signal_source() {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Asked for explicitly: a known project gets its makina defaults.
    let enabled = cfg.file.is_some() || cfg.project.is_some();
    if !enabled {
        log::warn!("no config file and no project: nothing to prepare");
    }
    let mut cfg = cfg.clone();
    if enabled {
        crate::prepare::preflight::use_state_dir(&mut cfg);
    }
    let mut jobs = LoopJobs {
        signals: &mut signals,
        last: None,
    };
    match crate::prepare::phase::run(&cfg, &args.skip, enabled, &mut jobs) {
        Ok(_) => Outcome::Done,
        Err(f) => {
            f.log();
            f.outcome
        }
    }
}

fn run(
    mut cfg: Config,
    warnings: &[Diag],
    args: &Args,
    opts: LoadOptions,
    notify_socket: Option<String>,
) -> Outcome {
    use crate::supervisor::{ReloadSet, Role};
    for w in warnings {
        log::warn!("{w}");
    }
    let mut signals = match signal_source() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut services: Vec<(Service, Role)> = cfg
        .services
        .iter()
        .cloned()
        .map(|s| (s, Role::Config))
        .collect();
    if !args.cmd.is_empty() {
        services.push((Service::main(args.cmd.clone()), Role::Main));
    }
    if services.is_empty() && cfg.file.is_none() {
        eprintln!("mc-launcher: nothing to run: give a command (mc-launcher -- CMD) or a config file\n\n{}", usage());
        return Outcome::Usage;
    }
    let prepare = prepares(&cfg, args);
    if prepare {
        crate::prepare::preflight::use_state_dir(&mut cfg);
    }
    let state_dir = cfg.paths.state.clone();
    // The key directories are watched before the prepare phase reads
    // them: a key dropped meanwhile is seen as a change. A step that
    // cannot work here (not root, another user's keys) watches nothing.
    let ssh_in_use =
        prepare && !args.skip.contains(&PrepareStep::Ssh) && crate::prepare::ssh::usable(&cfg.ssh);
    let keys_watch = (ssh_in_use && cfg.ssh.watch)
        .then(|| {
            crate::proc::watch::DirWatch::new(&cfg.ssh.keys_dirs)
                .map_err(|e| log::warn!("ssh: cannot watch the key directories: {e}"))
                .ok()
        })
        .flatten();
    // The same for the live reconfigure's inputs (README "Live reconfigure").
    let reconfigure_watch = (prepare && cfg.reconfigure.watch)
        .then(|| {
            crate::proc::watch::FileWatch::new(&crate::prepare::reconfigure::live_inputs(&cfg))
                .map_err(|e| log::warn!("reconfigure: cannot watch the inputs: {e}"))
                .ok()
        })
        .flatten();
    let mut jobs = LoopJobs {
        signals: &mut signals,
        last: None,
    };
    let pillar = match crate::prepare::phase::run(&cfg, &args.skip, prepare, &mut jobs) {
        // sshd, when the phase asks for it, runs first among the services.
        Ok(prepared) => {
            for s in prepared.services.into_iter().rev() {
                crate::prepare::ssh::log_starting(&cfg);
                services.insert(0, (s, Role::Sshd));
            }
            prepared.pillar
        }
        Err(f) => {
            f.log();
            let report = prepare_report(&f, jobs.last.take());
            if let Some(path) = &cfg.termination_log {
                crate::fsutil::write_termination_log(path, Some(&cfg.paths.volume), &report);
            }
            log::info!("{}", report.summary());
            return f.outcome;
        }
    };
    let reconfigurer = prepare.then(|| live_reconfigurer(&cfg, &opts, &args.skip));
    // SIGHUP / `ctl reload` re-read the same file the launcher started
    // from. sshd is the launcher's own: it changes only with `ssh:`.
    let reloader: Option<crate::supervisor::Reloader> = cfg.file.clone().map(|file| {
        let mut opts = opts;
        opts.config = Some(file);
        let mut ssh = cfg.ssh.clone();
        Box::new(move || {
            let mut l = config::load(&opts).map_err(|diags| {
                diags
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
            l.config.paths.state = state_dir.clone();
            // A reload may change the log format too (the next records).
            use_log_config(&l.config.log);
            let sshd = if ssh_in_use && l.config.ssh != ssh {
                ssh = l.config.ssh.clone();
                Some(crate::prepare::phase::resync_keys(&l.config))
            } else {
                None
            };
            let set = ReloadSet {
                services: l.config.services.clone(),
                sshd,
                shutdown_timeout: l.config.shutdown.timeout,
                drain: l.config.shutdown.drain,
            };
            Ok((l.config, set))
        }) as crate::supervisor::Reloader
    });
    let on_keys_changed = (ssh_in_use && cfg.ssh.watch)
        .then(|| Box::new(crate::prepare::phase::resync_keys) as crate::supervisor::KeysChanged);
    // How supervision ended: a service's status passed through, a
    // signal's, a failure.
    crate::supervisor::run(
        cfg,
        services,
        &mut signals,
        crate::supervisor::RunOptions {
            reloader,
            on_keys_changed,
            keys_watch,
            notify_socket,
            reconfigurer,
            reconfigure_watch,
            pillar,
        },
    )
}

/// The inline part of a live reconfigure (README "Live reconfigure"): the
/// config file read again and validated (an invalid one changes nothing),
/// then the pillar and templates through `prepare::reconfigure::live`. The
/// `salt`/`command` steps it returns run in the supervisor's loop.
fn live_reconfigurer(
    cfg: &Config,
    opts: &LoadOptions,
    skip: &[PrepareStep],
) -> crate::supervisor::Reconfigurer {
    use crate::prepare::reconfigure::{live, live_inputs, LiveError};
    use crate::supervisor::{Prepared, ReconfigureRun};
    let mut current = cfg.clone();
    let mut opts = opts.clone();
    opts.config = cfg.file.clone();
    let skip = skip.to_vec();
    Box::new(move |retry| {
        if current.file.is_some() {
            match config::load(&opts) {
                Ok(l) => {
                    let mut next = l.config;
                    next.paths.state = current.paths.state.clone();
                    current = next;
                }
                Err(diags) => {
                    let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
                    return ReconfigureRun {
                        result: Prepared::Invalid(text.join("; ")),
                        watch: live_inputs(&current),
                    };
                }
            }
        }
        let mut effective = current.clone();
        if skip.contains(&PrepareStep::Reconfigure) {
            effective.reconfigure.steps.clear();
        }
        let result = match live(&effective, retry, !skip.contains(&PrepareStep::Pillar)) {
            Ok(o) => {
                if o.pillar_changed && o.changed.is_empty() && o.jobs.is_empty() {
                    log::info!("reconfigure: the new pillar changes no output");
                }
                Prepared::Ready {
                    changed: o.changed,
                    steps: o.jobs,
                }
            }
            Err(LiveError::Invalid(e)) => Prepared::Invalid(e),
            Err(LiveError::Failed(e)) => Prepared::Failed(e),
        };
        ReconfigureRun {
            result,
            watch: live_inputs(&current),
        }
    })
}

/// At most `max` characters of `text`, the cut said with a `…`: the last
/// line repeats the error logged whole just above it.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The termination report of a prepare phase that stopped the start.
fn prepare_report(
    f: &error::Failure,
    last: Option<(String, crate::proc::JobEnd, Vec<String>)>,
) -> error::Termination {
    use crate::proc::JobEnd;
    let reason = match f.outcome {
        Outcome::InvalidInput => "invalid input".to_string(),
        Outcome::Signaled(_) => "stopped on request during the prepare phase".to_string(),
        _ => "a prepare step failed".to_string(),
    };
    let mut t = error::Termination {
        reason,
        status: f.outcome,
        subject: (!f.subject.is_empty()).then(|| f.subject.clone()),
        how: Some(cut(&f.message, 500)),
        ..Default::default()
    };
    // The step that ran last, when it is the one that failed.
    if let Some((name, end, tail)) = last {
        let how = match end {
            JobEnd::Exited(crate::proc::exit::Exit::Code(0)) => None,
            JobEnd::Exited(e) => Some(e.to_string()),
            JobEnd::NotStarted(why) => Some(why),
            JobEnd::TimedOut => Some("timed out".into()),
            JobEnd::Interrupted(sig) => {
                Some(format!("stopped by {}", crate::signals::short_name(sig)))
            }
        };
        if how.is_some() {
            t.subject = Some(name);
            t.how = how;
            t.tail = tail;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_verdicts() {
        assert_eq!(verdict(0, 0), "check: OK");
        assert_eq!(verdict(0, 2), "check: OK, 2 warning(s)");
        assert_eq!(verdict(3, 0), "check: 3 error(s)");
        assert_eq!(verdict(1, 1), "check: 1 error(s), 1 warning(s)");
    }

    /// The last line repeats a long error cut short, and says it is cut
    /// (an on_invalid: last-good refusal that names a template runs past
    /// 500 characters); a short one is whole.
    #[test]
    fn a_long_prepare_error_is_cut_visibly() {
        let long = format!(
            "pillar: {}; stopping (on_invalid: last-good)",
            "x".repeat(600)
        );
        let f = error::Failure::new(Outcome::InvalidInput, "pillar", long);
        let line = prepare_report(&f, None).summary();
        assert!(line.ends_with("xxx…)"), "{line}");
        assert!(line.chars().count() < 600, "{line}");
        let f = error::Failure::new(Outcome::InvalidInput, "pillar", "pillar: short");
        assert_eq!(
            prepare_report(&f, None).summary(),
            "exit 78: invalid input (pillar: pillar: short)"
        );
    }
}
