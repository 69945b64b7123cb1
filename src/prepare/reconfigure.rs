//! Reconfigure steps (DESIGN §4.3): `salt`, `template` and `command`, run in
//! order, each child in its own process group with its output prefixed by
//! the step's name, under a timeout, and stopped (TERM, then KILL) when a
//! stop signal arrives.

use crate::config::model::{Config, OnError, Step, StepKind};
use crate::error::{Diag, EXIT_FAILURE};
use crate::proc::exit::Exit;
use crate::proc::{output, spawn};
use crate::signals::SignalSource;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a step's process group gets between TERM and KILL.
const STEP_GRACE: Duration = Duration::from_secs(3);

/// How the phase ended when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A step failed with `on_error: abort`: exit 1.
    Failed(String),
    /// A stop signal arrived: exit 128+N.
    Signal(Signal),
}

impl Stop {
    pub fn exit_status(&self) -> i32 {
        match self {
            Stop::Failed(_) => EXIT_FAILURE,
            Stop::Signal(s) => crate::error::signal_exit(*s as i32),
        }
    }
}

/// How one child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(Exit),
    TimedOut,
    Interrupted(Signal),
}

/// Run the steps, unless `skip_unchanged` finds nothing changed since the
/// last successful run.
pub fn run(cfg: &Config, signals: &mut SignalSource) -> Result<(), Stop> {
    let rc = &cfg.reconfigure;
    if rc.steps.is_empty() {
        return Ok(());
    }
    let digest = inputs_digest(cfg);
    let digest_file = cfg.paths.state.join("reconfigure.digest");
    if rc.skip_unchanged {
        if let Ok(old) = std::fs::read_to_string(&digest_file) {
            if old.trim() == digest {
                log::info!("reconfigure: inputs unchanged since the last successful run, skipping");
                return Ok(());
            }
        }
    }
    let mut all_ok = true;
    for step in &rc.steps {
        let started = Instant::now();
        log::info!("reconfigure: {} …", step.name);
        let res = match &step.kind {
            StepKind::Template {
                src,
                dest,
                mode,
                owner,
            } => render_template(cfg, src, dest, *mode, owner.as_ref()).map_err(|d| d.to_string()),
            StepKind::Salt { states, config_dir } => {
                let argv = salt_argv(states, config_dir.as_deref());
                run_argv(cfg, step, &argv, signals)?
            }
            StepKind::Command { argv } => run_argv(cfg, step, argv, signals)?,
        };
        match res {
            Ok(()) => log::info!(
                "reconfigure: {} done in {}",
                step.name,
                crate::units::fmt_duration(started.elapsed())
            ),
            Err(msg) => {
                all_ok = false;
                match rc.on_error {
                    OnError::Abort => {
                        log::error!("reconfigure: {}: {msg}", step.name);
                        return Err(Stop::Failed(format!("{}: {msg}", step.name)));
                    }
                    OnError::Continue => {
                        log::warn!("reconfigure: {}: {msg} (on_error: continue)", step.name)
                    }
                }
            }
        }
    }
    if all_ok {
        let saved = std::fs::create_dir_all(&cfg.paths.state)
            .and_then(|()| std::fs::write(&digest_file, format!("{digest}\n")));
        if let Err(e) = saved {
            log::warn!(
                "cannot record the reconfigure digest in {}: {e}",
                digest_file.display()
            );
        }
    }
    Ok(())
}

pub fn salt_argv(states: &[String], config_dir: Option<&Path>) -> Vec<String> {
    let mut argv = vec![
        "salt-call".to_string(),
        "--local".into(),
        "--retcode-passthrough".into(),
    ];
    if let Some(dir) = config_dir {
        argv.push("-c".into());
        argv.push(dir.to_string_lossy().into_owned());
    }
    argv.push("state.sls".into());
    argv.push(states.join(","));
    argv
}

/// Run one argv step; the outer `Err` is a stop signal, the inner one a failure.
fn run_argv(
    cfg: &Config,
    step: &Step,
    argv: &[String],
    signals: &mut SignalSource,
) -> Result<Result<(), String>, Stop> {
    let env = spawn::mc_env(cfg, &step.name);
    match run_child(&step.name, argv, env, step.timeout, signals) {
        Ok(ChildEnd::Exited(Exit::Code(0))) => Ok(Ok(())),
        Ok(ChildEnd::Exited(e)) => Ok(Err(format!(
            "{} failed ({e})",
            argv.first().map(String::as_str).unwrap_or("")
        ))),
        Ok(ChildEnd::TimedOut) => Ok(Err(format!(
            "timed out after {}",
            crate::units::fmt_duration(step.timeout.unwrap_or_default())
        ))),
        Ok(ChildEnd::Interrupted(sig)) => Err(Stop::Signal(sig)),
        Err(e) => Ok(Err(format!(
            "cannot run {}: {e}",
            argv.first().map(String::as_str).unwrap_or("")
        ))),
    }
}

/// Run `argv` in its own process group with prefixed output, until it ends,
/// times out, or a stop signal arrives (then its group gets TERM, and KILL
/// after a grace). Other children that end meanwhile (orphans) are reaped.
pub fn run_child(
    name: &str,
    argv: &[String],
    env: Vec<(String, String)>,
    timeout: Option<Duration>,
    signals: &mut SignalSource,
) -> std::io::Result<ChildEnd> {
    let (out_r, out_w) = output::pipe()?;
    let (err_r, err_w) = output::pipe()?;
    let mut readers = [
        Some(output::reader(
            out_r,
            output::Sink::Prefixed {
                prefix: format!("{name} | ").into_bytes(),
                to_stderr: false,
            },
        )),
        Some(output::reader(
            err_r,
            output::Sink::Prefixed {
                prefix: format!("{name} ! ").into_bytes(),
                to_stderr: true,
            },
        )),
    ];
    let pid = spawn::spawn(spawn::SpawnOpts {
        argv,
        env,
        copy_env: true,
        working_dir: None,
        creds: None,
        rlimits: &[],
        stdout: spawn::Out::Pipe(out_w),
        stderr: spawn::Out::Pipe(err_w),
        foreground: false,
        stdin_null: true,
    })?;
    let started = Instant::now();
    let mut files: Vec<output::FileOut> = Vec::new();
    let mut end: Option<ChildEnd> = None; // why we are stopping it, if we are
    let mut kill_at: Option<Instant> = None;
    let mut exit: Option<Exit> = None;
    let mut exited_at: Option<Instant> = None;
    loop {
        let readers_open = readers.iter().any(Option::is_some);
        // Done once the child has ended and its output is drained (or a
        // descendant in another group keeps the pipe open past a short wait).
        if let Some(t) = exited_at {
            if !readers_open || t.elapsed() > Duration::from_millis(200) {
                break;
            }
        }
        let mut deadline: Option<Instant> = kill_at;
        if end.is_none() {
            if let Some(t) = timeout {
                deadline = Some(started + t);
            }
        }
        if let Some(t) = exited_at {
            deadline = Some(t + Duration::from_millis(200));
        }
        let wait = match deadline {
            Some(d) => {
                let ms = d
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .saturating_add(1);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let (sig_ready, ready): (bool, Vec<usize>) = {
            let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
            let mut slots = Vec::new();
            for (i, r) in readers.iter().enumerate() {
                if let Some(r) = r {
                    fds.push(PollFd::new(r.fd(), PollFlags::POLLIN));
                    slots.push(i);
                }
            }
            if let Err(e) = poll(&mut fds, wait) {
                if e != Errno::EINTR {
                    log::error!("poll failed: {e}");
                }
            }
            let hit = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let sig = fds.first().is_some_and(hit);
            let ready = fds
                .iter()
                .skip(1)
                .zip(&slots)
                .filter(|(f, _)| hit(f))
                .map(|(_, &i)| i)
                .collect();
            (sig, ready)
        };
        for i in ready {
            if let Some(slot) = readers.get_mut(i) {
                if let Some(r) = slot {
                    if matches!(output::drain(r, &mut files), output::Drained::Closed) {
                        *slot = None;
                    }
                }
            }
        }
        if sig_ready {
            for r in signals.drain() {
                match r.signal {
                    Signal::SIGCHLD => {
                        while let Ok(st) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                            let (p, e) = match st {
                                WaitStatus::Exited(p, c) => (p, Exit::Code(c)),
                                WaitStatus::Signaled(p, s, _) => (p, Exit::Signal(s as i32)),
                                WaitStatus::StillAlive => break,
                                _ => continue,
                            };
                            if p.as_raw() == pid {
                                exit = Some(e);
                                exited_at = Some(Instant::now());
                                // Nothing the step started in its group outlives it.
                                spawn::signal_group(pid, Signal::SIGKILL);
                            }
                        }
                    }
                    Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                        if exit.is_none() {
                            if matches!(end, Some(ChildEnd::Interrupted(_))) {
                                spawn::signal_group(pid, Signal::SIGKILL); // second signal: now
                            } else {
                                log::warn!(
                                    "{name}: {} received: stopping the step",
                                    crate::signals::short_name(r.signal)
                                );
                                end = Some(ChildEnd::Interrupted(r.signal));
                                spawn::signal_group(pid, Signal::SIGTERM);
                                kill_at = Some(Instant::now() + STEP_GRACE);
                            }
                        }
                    }
                    other => log::debug!(
                        "{name}: ignoring {} during the prepare phase",
                        crate::signals::short_name(other)
                    ),
                }
            }
        }
        let now = Instant::now();
        if exit.is_none() {
            if end.is_none() && timeout.is_some_and(|t| now >= started + t) {
                log::warn!("{name}: timed out: stopping the step");
                end = Some(ChildEnd::TimedOut);
                spawn::signal_group(pid, Signal::SIGTERM);
                kill_at = Some(now + STEP_GRACE);
            } else if kill_at.is_some_and(|k| now >= k) {
                spawn::signal_group(pid, Signal::SIGKILL);
                kill_at = None;
            }
        }
    }
    Ok(match (end, exit) {
        (Some(e), _) => e,
        (None, Some(e)) => ChildEnd::Exited(e),
        (None, None) => ChildEnd::Exited(Exit::Code(EXIT_FAILURE)),
    })
}

// ----- templates ------------------------------------------------------

/// Pillar data for templates: PILLAR.sample deep-merged with the effective
/// init.sls (mappings merge, everything else is replaced), as makina does.
pub fn pillar_data(cfg: &Config) -> serde_json::Value {
    let mut data = serde_json::Value::Object(Default::default());
    let sample = cfg.paths.project.join(".salt/PILLAR.sample");
    for file in [sample, cfg.pillar.target.clone()] {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match crate::prepare::pillar::validate(&file, &text) {
            Ok(v) => deep_merge(&mut data, v),
            Err(d) => log::warn!("{d} (ignored for templates)"),
        }
    }
    data
}

pub fn deep_merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn template_env(src: &Path) -> Result<(minijinja::Environment<'static>, String), Diag> {
    let text = std::fs::read_to_string(src)
        .map_err(|e| Diag::file(src, format!("cannot read template: {e}")))?;
    let mut env = crate::template::environment(true);
    let name = src.to_string_lossy().into_owned();
    env.add_template_owned(name.clone(), text)
        .map_err(|e| crate::template::diag(src, &e))?;
    Ok((env, name))
}

/// Syntax check of a template, for `check`.
pub fn check_template(src: &Path) -> Option<Diag> {
    template_env(src).err()
}

pub fn render_template(
    cfg: &Config,
    src: &Path,
    dest: &Path,
    mode: Option<u32>,
    owner: Option<&crate::config::model::Owner>,
) -> Result<(), Diag> {
    let (env, name) = template_env(src)?;
    let tmpl = env
        .get_template(&name)
        .map_err(|e| crate::template::diag(src, &e))?;
    let paths = &cfg.paths;
    let ctx = minijinja::context! {
        env => std::env::vars().collect::<std::collections::BTreeMap<String, String>>(),
        project => cfg.project.clone().unwrap_or_default(),
        root => cfg.root.to_string_lossy(),
        paths => minijinja::context! {
            salt => paths.salt.to_string_lossy(),
            project => paths.project.to_string_lossy(),
            pillar => paths.pillar.to_string_lossy(),
            volume => paths.volume.to_string_lossy(),
            state => paths.state.to_string_lossy(),
        },
        pillar => minijinja::Value::from(minijinja::value::Serde(pillar_data(cfg))),
    };
    let text = tmpl
        .render(ctx)
        .map_err(|e| crate::template::diag(src, &e))?;
    let ids = match owner {
        Some(o) => {
            Some(crate::fsutil::resolve_owner(o).map_err(|e| Diag::file(dest, e.to_string()))?)
        }
        None => None,
    };
    // A missing parent (a fresh volume without configuration/) is created;
    // in the volume, no link on the way is followed.
    crate::fsutil::write_atomic_in(
        dest,
        &cfg.paths.volume,
        text.as_bytes(),
        mode.unwrap_or(0o644),
        ids,
    )
    .map_err(|e| Diag::file(dest, format!("cannot write: {e}")))
}

// ----- skip_unchanged -------------------------------------------------

/// A digest of everything the steps read: the effective pillar, PILLAR.sample,
/// the step list, template sources and the salt trees the salt steps use.
pub fn inputs_digest(cfg: &Config) -> String {
    let mut h = Sha256::new();
    let file = |h: &mut Sha256, p: &Path| {
        h.update(p.to_string_lossy().as_bytes());
        h.update([0]);
        match std::fs::read(p) {
            Ok(bytes) => {
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(_) => h.update(b"<missing>"),
        }
    };
    h.update(b"mc-launcher reconfigure v1\0");
    h.update(
        format!(
            "{:?}",
            cfg.reconfigure
                .steps
                .iter()
                .map(|s| (&s.name, &s.kind, s.timeout))
                .collect::<Vec<_>>()
        )
        .as_bytes(),
    );
    file(&mut h, &cfg.pillar.target);
    file(&mut h, &cfg.paths.project.join(".salt/PILLAR.sample"));
    let mut trees: Vec<PathBuf> = Vec::new();
    for step in &cfg.reconfigure.steps {
        match &step.kind {
            StepKind::Template { src, .. } => file(&mut h, src),
            StepKind::Salt { config_dir, .. } => {
                trees.push(cfg.paths.project.join(".salt"));
                trees.push(cfg.paths.salt.clone());
                if let Some(d) = config_dir {
                    trees.push(d.clone());
                }
            }
            StepKind::Command { .. } => {}
        }
    }
    trees.sort();
    trees.dedup();
    for tree in trees {
        let walker = walkdir::WalkDir::new(&tree)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walker.into_iter().flatten() {
            if entry.file_type().is_file() {
                file(&mut h, entry.path());
            } else if entry.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(entry.path()) {
                    h.update(entry.path().to_string_lossy().as_bytes());
                    h.update(target.to_string_lossy().as_bytes());
                }
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Problems `check` reports before anything runs.
pub fn check(cfg: &Config) -> Vec<Diag> {
    let mut out = Vec::new();
    let cfg_file = cfg.file.clone().unwrap_or_default();
    for step in &cfg.reconfigure.steps {
        match &step.kind {
            StepKind::Template { src, .. } => out.extend(check_template(src)),
            StepKind::Salt { .. } => {
                if let Err(e) = which::which("salt-call") {
                    out.push(Diag::new(
                        &cfg_file,
                        step.origin.pos,
                        format!("{}: salt-call: {e}", step.name),
                    ));
                }
            }
            StepKind::Command { argv } => {
                if let Some(prog) = argv.first() {
                    if let Err(e) = which::which(prog) {
                        out.push(Diag::new(
                            &cfg_file,
                            step.origin.pos,
                            format!("{}: {prog}: {e}", step.name),
                        ));
                    }
                }
            }
        }
    }
    out
}
