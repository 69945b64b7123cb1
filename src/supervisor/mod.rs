//! Supervision (README "Supervision"): a pure core that decides, a thin
//! shell that does.
//!
//! - `machine`: the life of one process, a pure state machine.
//! - `plan`: start order, stop order, reload diff — pure functions.
//! - `core` (a sealed module: its vocabulary in `core/types.rs`, its
//!   policy per concern in `core/{start,exits,steps,probes,stop,reload,
//!   live,jobs,control,metrics}.rs`): every service and the whole
//!   launcher, pure: `Core::handle(Input, now) -> Vec<Effect>`. Its state
//!   is its own; the shell calls `handle`, `next_deadline` and the
//!   read-only queries.
//! - `shell` (+ `shell/io.rs`): the one event loop, which carries the
//!   effects out and turns what happens into inputs.

mod core;
pub mod machine;
pub mod plan;
mod shell;

use crate::config::model::{Config, Service};
use crate::proc::{Job, JobEnd};
use crate::signals::SignalSource;
pub use core::{Prepared, ReconfigureCounts, ReloadSet, Role};

pub use shell::{KeysChanged, ReconfigureRun, Reconfigurer, Reloader};

/// What `run` needs beyond the services.
pub struct RunOptions {
    /// SIGHUP / `ctl reload`.
    pub reloader: Option<Reloader>,
    /// Called (debounced) after a change in the SSH key directories seen
    /// by `keys_watch`.
    pub on_keys_changed: Option<KeysChanged>,
    /// The watch of the key directories, set up before the prepare phase
    /// read them (a key dropped in between is not missed).
    pub keys_watch: Option<crate::proc::watch::DirWatch>,
    /// The launcher's own `NOTIFY_SOCKET` (podman, systemd).
    pub notify_socket: Option<String>,
    /// `ctl reconfigure` and, with `reconfigure_watch`, changes of the inputs.
    pub reconfigurer: Option<Reconfigurer>,
    /// The watch of the live reconfigure's inputs (`reconfigure.watch`).
    pub reconfigure_watch: Option<crate::proc::watch::FileWatch>,
    /// The pillar in use when the prepare phase went on with the last
    /// valid override (`ctl status` says so).
    pub pillar: Option<crate::ctl::proto::PillarState>,
}

/// Supervise `services` (the main service and sshd included, each with its
/// role) until everything has ended; return how the launcher ends.
pub fn run(
    cfg: Config,
    services: Vec<(Service, Role)>,
    signals: &mut SignalSource,
    opts: RunOptions,
) -> crate::error::Outcome {
    let is_pid1 = std::process::id() == 1;
    if !is_pid1 {
        // Orphans of our services are re-parented to us, so we reap them.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            log::warn!("cannot become a child subreaper: {e}");
        }
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9)
        ^ (std::process::id() as u64).rotate_left(32);
    let stdin_tty = nix::unistd::isatty(crate::proc::spawn::stdin_fd()).unwrap_or(false);
    let core = core::Core::new(
        services,
        core::CoreOptions {
            shutdown_timeout: cfg.shutdown.timeout,
            can_reload: opts.reloader.is_some(),
            seed,
            drain: cfg.shutdown.drain,
            notify_self: opts.notify_socket.is_some(),
            can_reconfigure: opts.reconfigurer.is_some(),
            start_time_unix: crate::proc::output::unix_now(),
            main_on_tty: stdin_tty,
            pillar: opts.pillar.clone(),
        },
    );
    let probes = match crate::proc::probe::Probes::new() {
        Ok(p) => p,
        Err(e) => {
            log::error!("cannot set up probes: {e}");
            return crate::error::Outcome::Failed;
        }
    };
    let keys = opts.keys_watch;
    let cgroup = crate::proc::cgroup::own();
    let oom_seen = cgroup
        .as_ref()
        .and_then(crate::proc::cgroup::oom_kills)
        .unwrap_or(0);
    // An HTTP endpoint that cannot be had is no reason not to run the
    // services: said, and `ctl` still answers.
    let http = cfg.metrics.listen.and_then(|addr| {
        crate::ctl::http::HttpServer::bind(addr)
            .map_err(|e| log::error!("http.listen {addr}: {e}: no HTTP endpoints (/metrics, /livez, /readyz, /status)"))
            .ok()
    });
    if let Some(h) = &http {
        log::debug!("http: http://{}/ (metrics, livez, readyz, status)", h.addr);
    }
    let groups = shell::watch_groups(&cfg);
    let svc_watch = if groups.is_empty() {
        None
    } else {
        shell::new_watch(groups)
    };
    let ctl = crate::ctl::server::Server::bind(&cfg);
    let mut shell = shell::Shell {
        svc_watch,
        http,
        ctl,
        keys,
        reloader: opts.reloader,
        on_keys_changed: opts.on_keys_changed,
        stdin_tty,
        is_pid1,
        notify_seed: seed,
        notify_target: opts.notify_socket.map(crate::proc::notify::Outbox::new),
        cgroup,
        oom_seen,
        reconfigurer: opts.reconfigurer,
        reconf_watch: opts.reconfigure_watch,
        ..shell::Shell::new(core, cfg, signals, probes)
    };
    shell.run()
}

/// Run one prepare step through the same core and loop as the services:
/// its own process group, output prefixed by its name, stopped (TERM, then
/// KILL after `STEP_GRACE`) at its timeout or when a stop signal arrives
/// (the core's `steps.rs`); what it left in its group is killed at its end.
pub fn run_job(cfg: &Config, signals: &mut SignalSource, job: Job) -> (JobEnd, Vec<String>) {
    let probes = match crate::proc::probe::Probes::new() {
        Ok(p) => p,
        Err(e) => {
            return (
                JobEnd::NotStarted(format!("cannot set up: {e}")),
                Vec::new(),
            )
        }
    };
    let core = core::Core::for_step(&job);
    let mut shell = shell::Shell {
        step_run: true,
        ..shell::Shell::new(core, cfg.clone(), signals, probes)
    };
    shell.run();
    let end = shell
        .step_end
        .take()
        .unwrap_or_else(|| JobEnd::NotStarted("ended without an exit status".into()));
    let tail = shell
        .tails
        .get(&job.name)
        .map(|t| t.borrow().lines())
        .unwrap_or_default();
    (end, tail)
}
