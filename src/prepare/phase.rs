//! The prepare phase (README "Prepare phase"): the steps of
//! `PrepareStep::ALL` in order (`step` holds what each one plans, does and
//! checks), after the preflight of every one. A stop signal is looked for
//! between steps and honoured inside the reconfigure steps: the launcher
//! then exits 128+N.

use super::preflight::{self, Ctx, Report};
use super::{step, Jobs, Prepared};
use crate::config::model::{Config, PrepareStep as Step, Service};
use crate::error::{self, Diag, Failure};

/// Run the phase. `Ok` holds what it leaves for the supervisor (the
/// services it adds, sshd; the pillar in use when it is the last valid
/// copy); `Err` why it stopped, with the exit status the launcher must end
/// with.
pub fn run(
    cfg: &Config,
    skip: &[Step],
    enabled: bool,
    jobs: &mut dyn Jobs,
) -> Result<Prepared, Failure> {
    let mut out = Prepared::default();
    // The volume is written by others: whatever lies under it is opened
    // beneath it, links refused for writes (log files included).
    crate::fsutil::set_untrusted_roots(std::slice::from_ref(&cfg.paths.volume));
    if !enabled {
        return Ok(out); // plain init: nothing to prepare
    }
    if cfg.file.is_none() && !skip.contains(&Step::Reconfigure) {
        log::info!("reconfigure: no mc-launcher.yml, so no steps: salt states run only when listed in reconfigure.steps");
    }
    // Every path the steps write is tested first: what cannot be written
    // stops the phase with one message before anything is (78).
    gate(cfg, &not_skipped(skip), true)?;
    let mut written = false;
    for step in Step::ALL {
        if !skip.contains(&step) {
            // What the steps before wrote can change what this one writes.
            if written {
                gate(cfg, &[step], false)?;
            }
            step::run(step, cfg, skip, jobs, &mut out)?;
            written = true;
        }
        stop_requested(jobs)?;
    }
    Ok(out)
}

fn not_skipped(skip: &[Step]) -> Vec<Step> {
    Step::ALL
        .into_iter()
        .filter(|s| !skip.contains(s))
        .collect()
}

/// The plan of `steps`: every path they are going to write that cannot be
/// written. The one planner: `run` passes it before each step (`gate`),
/// `check` prints it (`preflight`).
fn plan(steps: &[Step], ctx: &Ctx, first: bool) -> Report {
    let mut r = Report::new(ctx, first);
    for &s in steps {
        step::plan(s, ctx, &mut r);
    }
    r
}

/// The gate `run` passes before a step: the plan of `steps`; on problems,
/// the message is logged and the exit status is 78. `first`: no step has
/// run yet (its warnings are logged then only).
fn gate(cfg: &Config, steps: &[Step], first: bool) -> Result<(), Failure> {
    let report = plan(steps, &Ctx::for_run(cfg), first);
    if first {
        for w in &report.warnings {
            log::warn!("{w}");
        }
    }
    match report.message() {
        Some(m) => Err(Failure::new(error::Outcome::InvalidInput, "", m)),
        None => Ok(()),
    }
}

/// The preflight `check` runs: the plan of every step not skipped, from
/// the configured state dir (and the fallback `run` would take), writing
/// nothing.
pub fn preflight(cfg: &Config, skip: &[Step]) -> Report {
    let ctx = Ctx::for_check(cfg);
    let mut report = plan(&not_skipped(skip), &ctx, true);
    // A run says it when it binds the socket (one line, not two).
    preflight::control_socket(&ctx, &mut report);
    if let Some(w) = ctx.fallback_warning() {
        report.warnings.insert(0, w);
    }
    report
}

/// A stop signal that arrived while a step ran ends the phase (128+N).
fn stop_requested(jobs: &mut dyn Jobs) -> Result<(), Failure> {
    match jobs.stop_requested() {
        Some(sig) => Err(Failure::new(
            error::Outcome::Signaled(sig as i32),
            "",
            step::stopped(sig),
        )),
        None => Ok(()),
    }
}

/// Apply the key directories again while running (`ssh.watch`).
pub fn resync_keys(cfg: &Config) -> Option<Service> {
    super::ssh::resync(cfg)
}

/// Everything `check` validates of the prepare inputs, writing nothing.
pub fn check(cfg: &Config) -> Vec<Diag> {
    crate::fsutil::set_untrusted_roots(std::slice::from_ref(&cfg.paths.volume));
    Step::ALL
        .into_iter()
        .flat_map(|s| step::check(s, cfg))
        .collect()
}
