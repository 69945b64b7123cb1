//! The prepare phase (README "Prepare phase"), in order: pillar, SSH keys, reconfigure,
//! prepopulate. A stop signal is looked for between steps and honoured
//! inside the reconfigure steps: the launcher then exits 128+N.

use crate::config::model::PrepareStep as SkipStep;
use crate::config::model::{Config, OnInvalid, Service};
use crate::error::{self, Diag, Failure};
use crate::proc::{Job, JobEnd};
use nix::sys::signal::Signal;

/// How the phase runs its child processes (the `salt` and `command` steps)
/// and hears of stop signals: through the launcher's one loop, which `app`
/// wires in.
pub trait Jobs {
    /// Run a step's child to its end.
    fn run(&mut self, cfg: &Config, job: Job) -> JobEnd;
    /// A stop signal that arrived since the last look, if any (children
    /// that ended meanwhile are reaped).
    fn stop_requested(&mut self) -> Option<Signal>;
}

/// Run the phase. `Ok` holds services the phase adds (sshd); `Err` why it
/// stopped, with the exit status the launcher must end with.
pub fn run(
    cfg: &Config,
    skip: &[SkipStep],
    enabled: bool,
    jobs: &mut dyn Jobs,
) -> Result<Vec<Service>, Failure> {
    let mut extra = Vec::new();
    // The volume is written by others: whatever lies under it is opened
    // beneath it, links refused for writes (log files included).
    crate::fsutil::set_untrusted_roots(std::slice::from_ref(&cfg.paths.volume));
    if !enabled {
        return Ok(extra); // plain init: nothing to prepare
    }
    if cfg.file.is_none() && !skip.contains(&SkipStep::Reconfigure) {
        log::info!("reconfigure: no mc-launcher.yml, so no steps: salt states run only when listed in reconfigure.steps");
    }
    // Every path the steps write is tested first: what cannot be written
    // stops the phase with one message before anything is (78).
    let steps: Vec<SkipStep> = super::preflight::ALL
        .into_iter()
        .filter(|s| !skip.contains(s))
        .collect();
    super::preflight::gate(cfg, &steps, true)?;
    if !skip.contains(&SkipStep::Pillar) {
        pillar(cfg)?;
    }
    stop_requested(jobs)?;
    if !skip.contains(&SkipStep::Ssh) {
        super::preflight::gate(cfg, &[SkipStep::Ssh], false)?;
        if let Some(sshd) = ssh(cfg)? {
            extra.push(sshd);
        }
    }
    stop_requested(jobs)?;
    if !skip.contains(&SkipStep::Reconfigure) {
        super::preflight::gate(cfg, &[SkipStep::Reconfigure], false)?;
        super::reconfigure::run(cfg, jobs).map_err(|s| {
            let code = s.exit_status();
            match s {
                // The step said what failed, where it failed.
                super::reconfigure::Stop::Failed(m) => Failure::new(code, "reconfigure", m).said(),
                super::reconfigure::Stop::Signal(sig) => Failure::new(
                    code,
                    "",
                    format!(
                        "{} received during the prepare phase: exiting",
                        crate::signals::short_name(sig)
                    ),
                )
                .said(),
            }
        })?;
    }
    stop_requested(jobs)?;
    if !skip.contains(&SkipStep::Prepopulate) {
        super::preflight::gate(cfg, &[SkipStep::Prepopulate], false)?;
        match super::prepopulate::apply(&cfg.prepopulate, &cfg.paths.volume) {
            Ok(outcomes) => {
                for o in outcomes {
                    log::info!("prepopulate: {o}");
                }
            }
            Err(e) => {
                return Err(Failure::new(
                    error::EXIT_FAILURE,
                    "prepopulate",
                    e.to_string(),
                ))
            }
        }
    }
    stop_requested(jobs)?;
    Ok(extra)
}

/// A stop signal that arrived while a step ran ends the phase (128+N).
fn stop_requested(jobs: &mut dyn Jobs) -> Result<(), Failure> {
    match jobs.stop_requested() {
        Some(sig) => Err(Failure::new(
            error::signal_exit(sig as i32),
            "",
            format!(
                "{} received during the prepare phase: exiting",
                crate::signals::short_name(sig)
            ),
        )),
        None => Ok(()),
    }
}

fn pillar(cfg: &Config) -> Result<(), Failure> {
    use super::pillar::{apply, PillarError};
    match apply(cfg) {
        Ok(outcome) => {
            log::info!("pillar: {outcome}");
            Ok(())
        }
        // One line that says what is wrong and exactly what is installed.
        Err(PillarError::Invalid(d, installed)) => match cfg.pillar.on_invalid {
            OnInvalid::Abort => Err(Failure::new(
                error::EXIT_CONFIG,
                "pillar",
                format!("{d}; {installed}; stopping (on_invalid: abort)"),
            )),
            OnInvalid::KeepDefault => {
                log::warn!("pillar: {d}; {installed}; going on (on_invalid: keep-default)");
                Ok(())
            }
            // Loudly: one record naming the error and the copy started on.
            OnInvalid::LastGood if matches!(installed, super::pillar::Installed::LastGood(_)) => {
                log::warn!("pillar: {d}; {installed}; going on (on_invalid: last-good)");
                Ok(())
            }
            OnInvalid::LastGood => Err(Failure::new(
                error::EXIT_CONFIG,
                "pillar",
                format!("{d}; {installed}; stopping (on_invalid: last-good)"),
            )),
        },
        Err(e) => Err(Failure::new(error::EXIT_FAILURE, "pillar", e.to_string())),
    }
}

fn ssh(cfg: &Config) -> Result<Option<Service>, Failure> {
    super::ssh::step(cfg).map_err(|e| Failure::new(error::EXIT_FAILURE, e.step, e.msg))
}

/// Apply the key directories again while running (`ssh.watch`).
pub fn resync_keys(cfg: &Config) -> Option<Service> {
    super::ssh::resync(cfg)
}

/// Everything `check` validates of the prepare inputs, writing nothing.
pub fn check(cfg: &Config) -> Vec<Diag> {
    crate::fsutil::set_untrusted_roots(std::slice::from_ref(&cfg.paths.volume));
    let mut out = Vec::new();
    out.extend(super::pillar::check(cfg));
    out.extend(super::ssh::check_in(&cfg.ssh, Some(&cfg.paths.volume)));
    out.extend(super::prepopulate::check(&cfg.prepopulate));
    out.extend(super::reconfigure::check(cfg));
    out
}
