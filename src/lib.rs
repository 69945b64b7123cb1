//! mc-launcher: the PID 1 of makina-style, salt-configured images.
//!
//! The pipeline, in the order `run` follows it: `cli` reads the command line,
//! `config` loads and validates mc-launcher.yml, `prepare` readies the
//! container from its data volume, and `supervisor` keeps the services alive
//! until a stop is requested, then stops them all within one deadline.

// PID 1 must not panic on anything a user or the OS feeds it: no unwrap,
// expect or unchecked indexing outside tests (clippy enforces it).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod circus;
pub mod cli;
pub mod config;
pub mod crash;
pub mod ctl;
pub mod error;
pub mod fsutil;
pub mod prepare;
pub mod signals;
pub mod supervisor;
pub mod template;
pub mod yaml;
