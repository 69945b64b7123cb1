//! The steps of the prepare phase as one concept. Their list is
//! `PrepareStep` (config::model: the names `--skip` takes, and `ALL`, the
//! order they run in); here is every facet of a step, each one exhaustive
//! match, so that a new step is its variant, its module and the arms the
//! compiler then asks for here (README "Where a new feature goes"):
//!
//! - [`plan`]: the paths it is going to write, tested beforehand: the one
//!   planner (`phase`'s preflight) that `run` passes before writing and
//!   `check` prints;
//! - [`run`]: what it does when the phase runs it;
//! - [`check`]: what `check` validates of its inputs, writing nothing;
//! - [`describe`]: its entry in `check`'s summary.

use super::preflight::{self, Ctx, Report};
use super::Jobs;
use crate::config::model::{Config, OnInvalid, PrepareStep as Step, Service};
use crate::ctl::proto::PillarState;
use crate::error::{self, Diag, Failure};

/// Add to `r` every path `step` is going to write that cannot be written.
pub fn plan(step: Step, ctx: &Ctx, r: &mut Report) {
    match step {
        Step::Pillar => preflight::pillar(ctx, r),
        Step::Ssh => preflight::ssh(ctx, r),
        Step::Reconfigure => preflight::reconfigure(ctx, r),
        Step::Prepopulate => preflight::prepopulate(ctx, r),
    }
}

/// Run `step` (`skip`: the steps the phase skips), adding to `out` what
/// it leaves for the supervisor (sshd; the last-good pillar in use);
/// `Err` why the phase stops, with the exit status the launcher must end
/// with.
pub fn run(
    step: Step,
    cfg: &Config,
    skip: &[Step],
    jobs: &mut dyn Jobs,
    out: &mut super::Prepared,
) -> Result<(), Failure> {
    match step {
        Step::Pillar => out.pillar = pillar(cfg, !skip.contains(&Step::Reconfigure))?,
        Step::Ssh => out.services.extend(ssh(cfg)?),
        Step::Reconfigure => reconfigure(cfg, jobs)?,
        Step::Prepopulate => prepopulate(cfg)?,
    }
    Ok(())
}

/// What `check` finds wrong in the inputs of `step`, writing nothing.
pub fn check(step: Step, cfg: &Config) -> Vec<Diag> {
    match step {
        Step::Pillar => super::pillar::check(cfg),
        // A start that cannot use SSH does not read the keys either.
        Step::Ssh if !super::ssh::usable(&cfg.ssh) => Vec::new(),
        Step::Ssh => super::ssh::check_in(&cfg.ssh, Some(&cfg.paths.volume)),
        Step::Reconfigure => super::reconfigure::check(cfg),
        Step::Prepopulate => super::prepopulate::check(&cfg.prepopulate),
    }
}

/// The lines of `step` in `check`'s summary: what it works on, then one
/// line per item.
pub fn describe(step: Step, cfg: &Config, skipped: bool) -> String {
    let skipped = if skipped { " (skipped)" } else { "" };
    let (what, items): (String, Vec<String>) = match step {
        Step::Pillar => (
            format!(
                "{} -> {}{skipped}",
                cfg.pillar.source.display(),
                cfg.pillar.target.display()
            ),
            Vec::new(),
        ),
        Step::Ssh if skipped.is_empty() && !super::ssh::usable(&cfg.ssh) => {
            ("skipped, not running as root".to_string(), Vec::new())
        }
        Step::Ssh => (
            format!("keys of {} from {}{skipped}", cfg.ssh.user, key_dirs(cfg)),
            Vec::new(),
        ),
        Step::Reconfigure => (
            format!(
                "{} step(s){skipped}{}",
                cfg.reconfigure.steps.len(),
                if cfg.reconfigure.watch {
                    ", applied live (reconfigure.watch)"
                } else {
                    ""
                }
            ),
            cfg.reconfigure
                .steps
                .iter()
                .map(|s| s.name.clone())
                .collect(),
        ),
        Step::Prepopulate => (
            format!("{} destination(s){skipped}", cfg.prepopulate.len()),
            cfg.prepopulate
                .iter()
                .map(|p| format!("{} -> {}", p.src.display(), p.dest.display()))
                .collect(),
        ),
    };
    let mut out = format!("  {:<13}{what}\n", step.name());
    for item in items {
        out.push_str(&format!("    - {item}\n"));
    }
    out
}

/// `templates`: the reconfigure step runs, so the override must fit its
/// templates. `Some` when the start goes on with the last valid override.
fn pillar(cfg: &Config, templates: bool) -> Result<Option<PillarState>, Failure> {
    use super::pillar::{apply_plan, PillarError};
    match apply_plan(cfg, || super::reconfigure::start_plan(cfg, templates)) {
        Ok(outcome) => {
            log::info!("pillar: {outcome}");
            Ok(None)
        }
        // One line that says what is wrong and exactly what is installed.
        Err(PillarError::Invalid(d, installed)) => match cfg.pillar.on_invalid {
            OnInvalid::Abort => Err(Failure::new(
                error::Outcome::InvalidInput,
                "pillar",
                format!("{d}; {installed}; stopping (on_invalid: abort)"),
            )),
            OnInvalid::KeepDefault => {
                log::warn!("pillar: {d}; {installed}; going on (on_invalid: keep-default)");
                Ok(None)
            }
            // Loudly: one record naming the error and the copy started on.
            OnInvalid::LastGood => match &installed {
                super::pillar::Installed::LastGood(copy) => {
                    log::warn!("pillar: {d}; {installed}; going on (on_invalid: last-good)");
                    Ok(Some(PillarState {
                        in_use: "last-good".into(),
                        copy: copy.display().to_string(),
                        error: d.to_string(),
                    }))
                }
                _ => Err(Failure::new(
                    error::Outcome::InvalidInput,
                    "pillar",
                    format!("{d}; {installed}; stopping (on_invalid: last-good)"),
                )),
            },
        },
        Err(e) => Err(Failure::new(
            error::Outcome::StepFailed,
            "pillar",
            e.to_string(),
        )),
    }
}

/// The SSH step itself is `ssh::step` (README "SSH keys").
fn ssh(cfg: &Config) -> Result<Option<Service>, Failure> {
    super::ssh::step(cfg).map_err(|e| Failure::new(error::Outcome::StepFailed, e.step, e.msg))
}

/// The key directories, for messages.
fn key_dirs(cfg: &Config) -> String {
    cfg.ssh
        .keys_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn reconfigure(cfg: &Config, jobs: &mut dyn Jobs) -> Result<(), Failure> {
    use super::reconfigure::{run, Stop};
    run(cfg, jobs).map_err(|s| {
        let code = s.outcome();
        match s {
            // The step said what failed, where it failed.
            Stop::Failed(m) => Failure::new(code, "reconfigure", m).said(),
            Stop::Signal(sig) => Failure::new(code, "", stopped(sig)).said(),
        }
    })
}

fn prepopulate(cfg: &Config) -> Result<(), Failure> {
    match super::prepopulate::apply(&cfg.prepopulate, &cfg.paths.volume) {
        Ok(outcomes) => {
            for o in outcomes {
                log::info!("prepopulate: {o}");
            }
            Ok(())
        }
        Err(e) => Err(Failure::new(
            error::Outcome::StepFailed,
            "prepopulate",
            e.to_string(),
        )),
    }
}

/// What the launcher says when a stop signal ends the phase (128+N).
pub(super) fn stopped(sig: nix::sys::signal::Signal) -> String {
    format!(
        "{} received during the prepare phase: exiting",
        crate::signals::short_name(sig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Origin, Prepopulate, Step as Reconfigure, StepKind};
    use std::path::PathBuf;

    #[test]
    fn describe_lists_each_step_with_its_items() {
        let mut cfg = Config::plain(PathBuf::from("/r"), Some("p".into()));
        cfg.reconfigure.steps.push(Reconfigure {
            name: "command-1".into(),
            kind: StepKind::Command {
                argv: vec!["true".into()],
            },
            timeout: None,
            origin: Origin::default(),
        });
        cfg.reconfigure.watch = true;
        cfg.prepopulate.push(Prepopulate {
            src: "/img/data".into(),
            dest: "/r/projects/p/data/data".into(),
            owner: None,
            origin: Origin::default(),
        });
        let rows: [(Step, bool, &str); 4] = [
            (
                Step::Pillar,
                false,
                "  pillar       /r/projects/p/data/configuration/pillar.sls -> /r/projects/p/pillar/init.sls\n",
            ),
            (
                Step::Ssh,
                true,
                "  ssh          keys of root from /r/projects/p/data/ssh, /r/projects/p/data/ms_ssh (skipped)\n",
            ),
            (
                Step::Reconfigure,
                true,
                "  reconfigure  1 step(s) (skipped), applied live (reconfigure.watch)\n    - command-1\n",
            ),
            (
                Step::Prepopulate,
                false,
                "  prepopulate  1 destination(s)\n    - /img/data -> /r/projects/p/data/data\n",
            ),
        ];
        for (step, skipped, want) in rows {
            assert_eq!(describe(step, &cfg, skipped), want, "{step:?}");
        }
    }
}
