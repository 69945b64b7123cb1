//! Child processes: spawning in process groups, decoding how they ended,
//! reaping, capturing their output, and watching files. Tools only: the
//! policy of what to run and when is the supervisor's. Layer 2.

pub mod exit;
pub mod output;
pub mod reap;
pub mod spawn;
pub mod watch;
