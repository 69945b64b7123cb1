//! Output of services and of the launcher itself.
//!
//! The event loop only reads: each child's `prefix` or `file` pipe is
//! drained into whole lines, which go, with their prefix, to one queue.
//! A single writer thread empties the queue into the launcher's stdout,
//! stderr and log files (with size rotation), in order, so lines never
//! interleave or tear. The queue is bounded: when whoever reads the
//! container's output stalls, lines beyond the bound are dropped and
//! counted — the loop never blocks on a write — and the count is reported
//! once writing works again. The launcher's own log lines take the same
//! queue, so they never interleave with a service's. Layer 2.
//!
//! One file per concern: `relay` (pipes to framed lines), `writer` (the
//! queue and its thread), `file` (log files and rotation), `ratelimit`,
//! `tail` (the last stderr lines), `ring` (what `ctl logs` reads).

mod file;
mod ratelimit;
mod relay;
mod ring;
mod tail;
mod writer;

pub use file::FileOut;
pub use ratelimit::{Limiter, SharedLimiter};
pub use relay::{drain, drain_budget, drain_into, pipe, reader, Drained, Reader, MAX_DRAIN};
pub use ring::{answer, logs, Answer, Asked, Follower, Logs, Stream};
pub use tail::{SharedTail, Tail};
pub use writer::{writer, Dest, QueueWriter, Round, Writer, QUEUE_BYTES, STALLED};

/// The wall clock, in seconds since the Unix epoch (0 before it).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
