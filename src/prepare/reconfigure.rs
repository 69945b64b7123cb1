//! Reconfigure steps (README "Reconfigure"): `salt`, `template` and `command`, run in
//! order, each child in its own process group with its output prefixed by
//! the step's name, under a timeout, and stopped (TERM, then KILL) when a
//! stop signal arrives.

use super::Jobs;
use crate::config::model::{Config, OnError, Step, StepKind};
use crate::error::{Diag, Outcome};
use crate::proc::exit::Exit;
use crate::proc::{spawn, Job, JobEnd};
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How the phase ended when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A step failed with `on_error: abort`: exit 1.
    Failed(String),
    /// A stop signal arrived: exit 128+N.
    Signal(Signal),
}

impl Stop {
    pub fn outcome(&self) -> Outcome {
        match self {
            Stop::Failed(_) => Outcome::StepFailed,
            Stop::Signal(s) => Outcome::Signaled(*s as i32),
        }
    }
}

/// Run the steps, unless `skip_unchanged` finds nothing changed since the
/// last successful run.
pub fn run(cfg: &Config, jobs: &mut dyn Jobs) -> Result<(), Stop> {
    let rc = &cfg.reconfigure;
    if rc.steps.is_empty() {
        return Ok(());
    }
    // The inputs as the steps find them (they may change some).
    let digest = inputs_digest(cfg);
    if rc.skip_unchanged && stored_digest(&cfg.paths.state).is_some_and(|d| d == digest) {
        log::info!("reconfigure: inputs unchanged since the last successful run, skipping");
        return Ok(());
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
            } => render_text(cfg, src)
                .and_then(|text| write_rendered(cfg, &text, dest, *mode, owner.as_ref()))
                .map_err(|d| d.to_string()),
            StepKind::Salt { states, config_dir } => {
                let argv = salt_argv(states, config_dir.as_deref());
                run_argv(cfg, step, &argv, jobs)?
            }
            StepKind::Command { argv } => run_argv(cfg, step, argv, jobs)?,
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
        record_digest(&cfg.paths.state, &digest);
    }
    Ok(())
}

/// Record the digest of the inputs of a successful run; one that cannot
/// be is said with the path that must be writable and how (a
/// `--read-only` container with no tmpfs: README "Read-only and non-root
/// containers").
fn record_digest(state: &Path, digest: &str) {
    let file = state.join(DIGEST);
    let saved = crate::fsutil::at(state, std::fs::create_dir_all(state))
        .and_then(|()| crate::fsutil::at(&file, std::fs::write(&file, format!("{digest}\n"))));
    if let Err(e) = saved {
        log::warn!(
            "reconfigure: cannot record the digest of its inputs: {e}; {}",
            super::state_dir_hint(state)
        );
    }
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

/// The child process of a `salt` or `command` step.
fn job(cfg: &Config, step: &Step, argv: Vec<String>) -> Job {
    Job {
        name: step.name.clone(),
        argv,
        env: spawn::mc_env(cfg, &step.name),
        timeout: step.timeout,
    }
}

/// Run one argv step; the outer `Err` is a stop signal, the inner one a failure.
fn run_argv(
    cfg: &Config,
    step: &Step,
    argv: &[String],
    jobs: &mut dyn Jobs,
) -> Result<Result<(), String>, Stop> {
    let job = job(cfg, step, argv.to_vec());
    let prog = argv.first().map(String::as_str).unwrap_or("");
    match jobs.run(cfg, job) {
        JobEnd::Exited(Exit::Code(0)) => Ok(Ok(())),
        JobEnd::Exited(e) => Ok(Err(format!("{prog} failed ({e})"))),
        JobEnd::TimedOut => Ok(Err(format!(
            "timed out after {}",
            crate::units::fmt_duration(step.timeout.unwrap_or_default())
        ))),
        JobEnd::Interrupted(sig) => Err(Stop::Signal(sig)),
        JobEnd::NotStarted(why) => Ok(Err(why)),
    }
}

// ----- templates ------------------------------------------------------

/// Pillar data for templates: PILLAR.sample deep-merged with the effective
/// init.sls (mappings merge, everything else is replaced), as makina does.
pub fn pillar_data(cfg: &Config) -> serde_json::Value {
    pillar_data_over(cfg, &cfg.pillar.target)
}

/// PILLAR.sample deep-merged with `effective` (an init.sls, or the
/// override that the pillar step would install).
fn pillar_data_over(cfg: &Config, effective: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(effective).ok();
    pillar_data_from(cfg, effective, text.as_deref())
}

/// [`pillar_data`] with `target` as the text of init.sls (`None`: none).
pub fn pillar_data_with(cfg: &Config, target: Option<&str>) -> serde_json::Value {
    pillar_data_from(cfg, &cfg.pillar.target, target)
}

/// PILLAR.sample deep-merged with `text`, read from `name`.
fn pillar_data_from(cfg: &Config, name: &Path, text: Option<&str>) -> serde_json::Value {
    let mut data = serde_json::Value::Object(Default::default());
    let sample = cfg.paths.project.join(".salt/PILLAR.sample");
    let sample_text = std::fs::read_to_string(&sample).ok();
    for (file, text) in [(sample.as_path(), sample_text.as_deref()), (name, text)] {
        let Some(text) = text else {
            continue;
        };
        match crate::prepare::pillar::validate(file, text) {
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

/// Render a template with the pillar and the usual context, in memory.
pub fn render_text(cfg: &Config, src: &Path) -> Result<String, Diag> {
    render_text_with(cfg, src, &pillar_data(cfg))
}

fn render_over(cfg: &Config, src: &Path, pillar: serde_json::Value) -> Result<String, Diag> {
    render_text_with(cfg, src, &pillar)
}

/// [`render_text`] against the pillar data `pillar`.
pub fn render_text_with(
    cfg: &Config,
    src: &Path,
    pillar: &serde_json::Value,
) -> Result<String, Diag> {
    let (env, name) = template_env(src)?;
    let tmpl = env
        .get_template(&name)
        .map_err(|e| crate::template::diag(src, &e))?;
    let ctx = minijinja::context! {
        pillar => minijinja::Value::from(minijinja::value::Serde(pillar)),
        ..cfg.template_context(crate::proc::cgroup::size())
    };
    crate::template::render_bounded(&tmpl, ctx).map_err(|f| f.diag(src))
}

/// Write a rendered template atomically, with its mode and owner.
fn write_rendered(
    cfg: &Config,
    text: &str,
    dest: &Path,
    mode: Option<u32>,
    owner: Option<&crate::config::model::Owner>,
) -> Result<(), Diag> {
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

// ----- live reconfigure -----------------------------------------------

/// The most of an installed template read back to compare it with a new
/// rendering; a bigger one counts as different.
const INSTALLED_LIMIT: u64 = 16 << 20;

/// Why a live reconfigure stopped before any process step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveError {
    /// An input is invalid (`file:line:col: ...`): nothing was written.
    Invalid(String),
    /// A step failed after the pillar was installed.
    Failed(String),
}

/// What the inline part of a live reconfigure did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveOutcome {
    /// The pillar installed differs from the one before.
    pub pillar_changed: bool,
    /// The template steps whose output differed, now written.
    pub changed: Vec<String>,
    /// The `salt` and `command` steps to run next, in order (when the
    /// pillar changed, or `retry`).
    pub jobs: Vec<Job>,
}

/// The inline part of a live reconfigure (README "Live reconfigure"), all
/// or nothing: validate the override first (an invalid one changes
/// nothing, whatever `on_invalid` says), render every `template` step
/// against the pillar it would install — a valid pillar of the wrong shape
/// for a template changes nothing either — then install it as the prepare
/// phase does (same beneath-the-volume reads, budgets and atomic install)
/// and write the renderings that differ from what is installed. The
/// `salt`/`command` steps are returned, never run here: the caller's loop
/// runs them as its own children.
pub fn live(cfg: &Config, retry: bool, with_pillar: bool) -> Result<LiveOutcome, LiveError> {
    use super::pillar::{self, Outcome, PillarError, Plan};
    if !with_pillar {
        // `--skip pillar`: the templates still follow their sources.
        let data = pillar_data(cfg);
        let rendered = render_all(cfg, &data).map_err(LiveError::Failed)?;
        return live_steps(cfg, retry, false, rendered);
    }
    let plan = match pillar::plan(cfg) {
        Ok(Plan::Invalid(d)) => return Err(LiveError::Invalid(d.to_string())),
        Ok(p) => p,
        Err(e) => return Err(LiveError::Failed(format!("pillar: {e}"))),
    };
    let next = pillar::text_after(cfg, &plan);
    let new_pillar = next != std::fs::read_to_string(&cfg.pillar.target).ok();
    let data = pillar_data_with(cfg, next.as_deref());
    let rendered = match render_all(cfg, &data) {
        Ok(r) => r,
        // The new pillar does not fit a template: it is not installed.
        Err(e) if new_pillar => {
            return Err(LiveError::Invalid(format!(
                "{e} (with the new pillar {}: not installed)",
                cfg.pillar.source.display()
            )))
        }
        Err(e) => return Err(LiveError::Failed(e)),
    };
    let pillar_changed = match pillar::install(cfg, plan) {
        Ok(o @ (Outcome::Installed(_) | Outcome::Restored)) => {
            log::info!("reconfigure: pillar: {o}");
            true
        }
        Ok(_) => false,
        Err(PillarError::Invalid(d, installed)) => {
            return Err(LiveError::Invalid(format!("{d}; {installed}")))
        }
        Err(e) => return Err(LiveError::Failed(format!("pillar: {e}"))),
    };
    live_steps(cfg, retry, pillar_changed, rendered)
}

/// The pillar step's plan at start. An override that a `template` step
/// does not render with counts as invalid too, whatever `on_invalid` says
/// (all or nothing, as a live update): it is not installed, and the start
/// stops (78), goes on with the image default or the last valid one,
/// instead of installing it and failing in the reconfigure step. A
/// template that does not render with the pillar in place either is not
/// the override's fault: that plan stands. `templates`: the reconfigure
/// step runs (not `--skip reconfigure`).
pub fn start_plan(
    cfg: &Config,
    templates: bool,
) -> Result<super::pillar::Plan, crate::fsutil::FsError> {
    use super::pillar::Plan;
    let plan = super::pillar::plan(cfg)?;
    if !templates {
        return Ok(plan);
    }
    if let Plan::Override(text) = &plan {
        if let Err(e) = render_all(cfg, &pillar_data_with(cfg, Some(text))) {
            if render_all(cfg, &pillar_data(cfg)).is_ok() {
                return Ok(Plan::Invalid(Diag::file(
                    &cfg.pillar.source,
                    format!(
                        "does not fit the templates: {e}; fix the override so that they render, or remove it"
                    ),
                )));
            }
        }
    }
    Ok(plan)
}

/// Every `template` step rendered in memory against `data`, in order: its
/// name and text; the first that fails, as `step: file:line:col: …`.
fn render_all(cfg: &Config, data: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for step in &cfg.reconfigure.steps {
        if let StepKind::Template { src, .. } = &step.kind {
            let text =
                render_text_with(cfg, src, data).map_err(|d| format!("{}: {d}", step.name))?;
            out.push((step.name.clone(), text));
        }
    }
    Ok(out)
}

/// The steps of a live reconfigure, once the pillar is in place: the
/// renderings (`rendered`, by step name) written where they differ.
fn live_steps(
    cfg: &Config,
    retry: bool,
    pillar_changed: bool,
    rendered: Vec<(String, String)>,
) -> Result<LiveOutcome, LiveError> {
    let mut changed = Vec::new();
    let mut jobs = Vec::new();
    let mut rendered = rendered.into_iter();
    for step in &cfg.reconfigure.steps {
        match &step.kind {
            StepKind::Template {
                dest, mode, owner, ..
            } => {
                let fail = |d: Diag| LiveError::Failed(format!("{}: {d}", step.name));
                let Some((_, text)) = rendered.next() else {
                    continue;
                };
                let root = crate::fsutil::under(dest, &cfg.paths.volume)
                    .is_some()
                    .then_some(cfg.paths.volume.as_path());
                let installed = crate::fsutil::read_file_in(dest, root, INSTALLED_LIMIT).ok();
                if installed.as_deref() == Some(text.as_bytes()) {
                    continue;
                }
                write_rendered(cfg, &text, dest, *mode, owner.as_ref()).map_err(fail)?;
                log::info!("reconfigure: {}: {} rendered", step.name, dest.display());
                changed.push(step.name.clone());
            }
            StepKind::Salt { states, config_dir } if pillar_changed || retry => {
                jobs.push(job(cfg, step, salt_argv(states, config_dir.as_deref())))
            }
            StepKind::Command { argv } if pillar_changed || retry => {
                jobs.push(job(cfg, step, argv.clone()))
            }
            StepKind::Salt { .. } | StepKind::Command { .. } => {}
        }
    }
    Ok(LiveOutcome {
        pillar_changed,
        changed,
        jobs,
    })
}

/// The files whose change a live reconfigure follows: the pillar override,
/// the config file, every template source.
pub fn live_inputs(cfg: &Config) -> Vec<PathBuf> {
    let mut out = vec![cfg.pillar.source.clone()];
    out.extend(cfg.file.clone());
    for step in &cfg.reconfigure.steps {
        if let StepKind::Template { src, .. } = &step.kind {
            out.push(src.clone());
        }
    }
    out
}

// ----- skip_unchanged -------------------------------------------------

/// The file in the state dir that keeps the digest of the last successful run.
const DIGEST: &str = "reconfigure.digest";

/// The inputs are those of the last successful run, whose digest `state`
/// keeps: with `skip_unchanged`, the steps are skipped (and the preflight
/// plans no write of theirs).
pub fn unchanged(cfg: &Config, state: &Path) -> bool {
    stored_digest(state).is_some_and(|d| d == inputs_digest(cfg))
}

/// The digest of the inputs of the last successful run.
fn stored_digest(state: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state.join(DIGEST)).ok()?;
    Some(text.trim().to_string())
}

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
    // The pillar the start would render with: the override when there is
    // one that reads as a pillar (an invalid one is the pillar check's
    // to report), else the installed one.
    let effective = match std::fs::read_to_string(&cfg.pillar.source) {
        Ok(t) if crate::prepare::pillar::validate(&cfg.pillar.source, &t).is_ok() => {
            cfg.pillar.source.clone()
        }
        _ => cfg.pillar.target.clone(),
    };
    let mut pillar = None;
    for step in &cfg.reconfigure.steps {
        match &step.kind {
            StepKind::Template { src, .. } => match check_template(src) {
                Some(d) => out.push(d),
                // Rendered in memory, as the step would: an undefined
                // value (a pillar key that is not there) is said now.
                None => {
                    let data = pillar
                        .get_or_insert_with(|| pillar_data_over(cfg, &effective))
                        .clone();
                    if let Err(d) = render_over(cfg, src, data) {
                        out.push(Diag {
                            msg: format!("{} (pillar: {})", d.msg, effective.display()),
                            ..d
                        });
                    }
                }
            },
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
