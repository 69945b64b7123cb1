//! mc-launcher: the PID 1 of makina-style, salt-configured images.
//!
//! The pipeline, in the order `run` follows it: `cli` reads the command line,
//! `config` loads and validates mc-launcher.yml, `prepare` readies the
//! container from its data volume, and `supervisor` keeps the services alive
//! until a stop is requested, then stops them all within one deadline; `app`
//! wires them together.
//!
//! Layers: [`LAYERS`] below is the one table (README "Architecture" points
//! here, tests/layers.rs reads it and checks the source against it).

// PID 1 must not panic on anything a user or the OS feeds it: no unwrap,
// expect or unchecked indexing outside tests (clippy enforces it).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod app;
pub mod cli;
pub mod config;
pub mod crash;
pub mod cron;
pub mod ctl;
pub mod error;
pub mod fsutil;
pub mod prepare;
pub mod proc;
pub mod signals;
pub mod supervisor;
pub mod template;
pub mod units;
pub mod users;
pub mod yaml;

/// The layers, lowest first. A module imports only from its own layer or a
/// lower one, and the three modules of layer 3 (`config`, `prepare`,
/// `supervisor`) never import each other. A module belongs to the layer of
/// the longest entry its path starts with (`ctl::client` is in layer 4, the
/// other parts of `ctl` in layer 2; `config::model` in layer 1, the rest of
/// `config` in layer 3). No file imports another that imports it back, even
/// through others (tests/layers.rs checks all three on the source).
pub const LAYERS: [&[&str]; 5] = [
    // L0: `error` (every exit code, the one `Failure` type, the termination
    // report), `units` (durations, the one yes/no parser), `signals`, `yaml`,
    // `template`, `users` (/etc/passwd and /etc/group, no NSS), `cron` (cron
    // expressions and the next run in a time zone).
    &[
        "error", "units", "signals", "yaml", "template", "users", "cron",
    ],
    // L1: the validated configuration.
    &["config::model"],
    // L2: `fsutil` (opens beneath a directory fd, atomic writes); `proc`
    // (`exit`: the one place that decodes a wait status; `spawn`; `reap`: the
    // one reaper; `output`: pipes, the writer thread; `probe`: non-blocking
    // probes; `watch`: directory notification, one real-time signal per
    // watch, read from a signalfd; `cgroup`; `notify`: sd_notify; `record`:
    // the text and JSON record formats); `ctl::proto` (typed
    // `Command`/`Reply`), `ctl::server`, `ctl::http` (`GET /metrics`).
    &["fsutil", "proc", "ctl"],
    // L3: `config` (`load`, `decoder`: the reader of the YAML tree,
    // `decode`, `inputs`, `jobs`, `circus`), `prepare` (`step`: every facet
    // of a step, one exhaustive match each; `phase`: the steps in order;
    // `preflight`: what they would write, tested; the steps `pillar`, `ssh`,
    // `reconfigure`, `prepopulate`), `supervisor`.
    &["config", "prepare", "supervisor"],
    // L4: `cli` (argv only), `app` (logging, dispatch, `check`/`render`, the
    // wiring: the reload function, the key-watch callback, the prepare
    // phase's jobs), `ctl::client`, `crash` (the panic hook); and main.rs.
    &["cli", "app", "ctl::client", "crash"],
];
