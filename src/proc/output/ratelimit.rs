//! The per-service rate limit (`log.rate_limit`): a fixed window, and one
//! warning per window that dropped lines, saying how many. Part of
//! `output`.

use super::writer::{writer, Dest};
use crate::config::model::RateLimit;
use crate::proc::record::{self, Framing};
use std::time::Instant;

/// The per-service rate limit (`log.rate_limit`), shared by the readers of
/// all its processes and streams.
pub struct Limiter {
    name: String,
    limit: RateLimit,
    window_end: Option<Instant>,
    count: u64,
    dropped: u64,
}

pub type SharedLimiter = std::rc::Rc<std::cell::RefCell<Limiter>>;

impl Limiter {
    pub fn new(name: &str, limit: RateLimit) -> Limiter {
        Limiter {
            name: name.to_string(),
            limit,
            window_end: None,
            count: 0,
            dropped: 0,
        }
    }

    pub fn set_limit(&mut self, limit: RateLimit) {
        self.limit = limit;
    }

    /// May one more line through at `now`? A fixed window of `per`: its
    /// first `lines` lines pass.
    pub(super) fn allow(&mut self, now: Instant, framing: Framing) -> bool {
        if self.window_end.is_none_or(|end| now >= end) {
            self.report(framing);
            self.window_end = Some(now + self.limit.per);
            self.count = 0;
        }
        if self.count < self.limit.lines {
            self.count += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// When a drop report is due (the window that dropped lines ends), so
    /// that a service that goes quiet after a flood still gets it.
    pub fn due(&self) -> Option<Instant> {
        self.window_end.filter(|_| self.dropped > 0)
    }

    /// Report the lines dropped in a window that is over.
    pub fn report_if_due(&mut self, now: Instant, framing: Framing) {
        if self.due().is_some_and(|end| now >= end) {
            self.report(framing);
        }
    }

    /// Report what was dropped now (the launcher is ending).
    pub fn report(&mut self, framing: Framing) {
        if self.dropped == 0 {
            return;
        }
        let msg = format!(
            "{} lines dropped (rate limit {}/{})",
            self.dropped,
            self.limit.lines,
            humantime::format_duration(self.limit.per)
        );
        self.dropped = 0;
        let w = writer();
        let mut out = w.buffer();
        record::launcher_line(framing, log::Level::Warn, Some(&self.name), &msg, &mut out);
        let mut text = Vec::new();
        let text_framing = Framing {
            format: crate::config::model::LogFormat::Text,
            ..framing
        };
        record::launcher_line(
            text_framing,
            log::Level::Warn,
            Some(&self.name),
            &msg,
            &mut text,
        );
        super::ring::logs().push_launcher(&text);
        w.submit(Dest::Stderr, out);
    }
}
