//! The prepare phase (README "The prepare phase"): each step computes what to do from the
//! volume and the config, and writes through `fsutil`.

pub mod phase;
pub mod pillar;
pub mod preflight;
pub mod prepopulate;
pub mod reconfigure;
pub mod ssh;
