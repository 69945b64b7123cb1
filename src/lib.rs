//! mc-launcher: the PID 1 of makina-style, salt-configured images.
//!
//! The pipeline, in the order `run` follows it: `cli` reads the command line,
//! `config` loads and validates mc-launcher.yml, `prepare` readies the
//! container from its data volume, and `supervisor` keeps the services alive
//! until a stop is requested, then stops them all within one deadline; `app`
//! wires them together.
//!
//! Layers (README "Architecture"). A module imports only from its own layer
//! or a lower one, and the three modules of layer 3 never import each other
//! (tests/layers.rs checks it):
//!
//! - L0 `error` (every exit code), `units`, `signals`, `yaml`, `template`,
//!   `users` (/etc/passwd and /etc/group, no NSS), `cron` (next runs of
//!   scheduled jobs)
//! - L1 `config::model`
//! - L2 `fsutil`, `proc` (`exit`, `spawn`, `output`, `reap`, `watch`),
//!   `ctl::proto`, `ctl::server`
//! - L3 `config` (`load`, `decode`, `circus`), `prepare`, `supervisor`
//! - L4 `cli`, `app`, `ctl::client`, `crash` (and `main.rs`)

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
