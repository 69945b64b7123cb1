//! Cron expressions of scheduled jobs (README "Scheduled jobs"), pure: a
//! 5-field expression (or an `@` shorthand) parsed into sets, and the next
//! run after a given instant in a time zone, daylight saving time included.
//! Layer 0.
//!
//! Times are seconds since the Unix epoch; a run is always on a whole
//! minute of the zone's wall clock. How the clock's jumps are met (as
//! cronie does, the cron of Debian and Fedora):
//!
//! - a job whose hour field is `*` (or `*/N`) runs by real time: in both
//!   passes of an hour that repeats when the clock goes back, and not at
//!   all in an hour the clock skips (which never happened);
//! - any other job runs at most once per wall-clock time: in a repeated
//!   hour only in its first pass, and a time the clock skips runs at the
//!   moment of the jump (several such times make one run).
//!
//! The time zone is `UTC`, a name of the image's zoneinfo database
//! (`/usr/share/zoneinfo`, or `$TZDIR`) such as `Europe/Paris`, or a POSIX
//! TZ string such as `CET-1CEST,M3.5.0,M10.5.0/3` (`zone.rs` reads them).

mod civil;
mod zone;
use civil::{days_in_month, weekday, Civil};
pub use zone::{Local, Zone};

/// A parsed 5-field expression: one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// Bits 0..=59.
    minutes: u64,
    /// Bits 0..=23.
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    /// The day-of-month field starts with `*`: with a restricted weekday
    /// field, only the weekday counts (and the other way round); when both
    /// are restricted, either matching is enough (as every cron does).
    days_star: bool,
    weekdays_star: bool,
    /// The hour field starts with `*`: the job runs by real time across
    /// clock changes (see the module's note).
    hours_star: bool,
}

/// The `@` shorthands, and what each stands for.
pub const SHORTHANDS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field: its name for messages, its range, the names it accepts
/// (numbered from `lo`).
struct Field {
    what: &'static str,
    lo: u32,
    hi: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        what: "minute",
        lo: 0,
        hi: 59,
        names: &[],
    },
    Field {
        what: "hour",
        lo: 0,
        hi: 23,
        names: &[],
    },
    Field {
        what: "day of month",
        lo: 1,
        hi: 31,
        names: &[],
    },
    Field {
        what: "month",
        lo: 1,
        hi: 12,
        names: &MONTHS,
    },
    Field {
        what: "day of week",
        // 7 is Sunday too.
        lo: 0,
        hi: 7,
        names: &WEEKDAYS,
    },
];

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(i as u32 + self.lo);
        }
        let v: u32 = text
            .parse()
            .map_err(|_| format!("{}: `{text}` is not a number", self.what))?;
        if v < self.lo || v > self.hi {
            return Err(format!(
                "{}: {v} is out of range {}-{}",
                self.what, self.lo, self.hi
            ));
        }
        Ok(v)
    }

    /// The bits of a field: `*`, `N`, `N-M`, `*/S`, `N-M/S`, `N/S`,
    /// names, lists of these.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .ok()
                        .filter(|&s| s > 0)
                        .ok_or_else(|| format!("{}: bad step `/{s}`", self.what))?;
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (from, to) = match range {
                "*" => (self.lo, self.hi),
                "" => return Err(format!("{}: empty item in `{text}`", self.what)),
                r => match r.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (self.value(a)?, self.value(b)?);
                        if a > b {
                            return Err(format!("{}: range {r} goes backwards", self.what));
                        }
                        (a, b)
                    }
                    // `N/S`: from N to the end, every S.
                    None if step.is_some() => (self.value(r)?, self.hi),
                    None => {
                        let v = self.value(r)?;
                        (v, v)
                    }
                },
            };
            let step = step.unwrap_or(1);
            let mut v = from;
            while v <= to {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }
}

impl Cron {
    /// Parse `M H DOM MON DOW` or an `@` shorthand (not `@reboot`, which
    /// is no time).
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let expr = expr.trim();
        let text = if expr.starts_with('@') {
            SHORTHANDS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(expr))
                .map(|(_, e)| *e)
                .ok_or_else(|| {
                    format!(
                        "unknown shorthand `{expr}` (use @reboot, {})",
                        SHORTHANDS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?
        } else {
            expr
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "`{expr}` has {} fields: a cron expression has 5 (minute hour day-of-month month day-of-week)",
                parts.len()
            ));
        }
        let mut bits = [0u64; 5];
        for ((field, part), out) in FIELDS.iter().zip(&parts).zip(bits.iter_mut()) {
            *out = field.parse(part)?;
        }
        let [minutes, hours, days, months, weekdays] = bits;
        // Sunday is 0 and 7.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        let star = |i: usize| parts.get(i).is_some_and(|p| p.starts_with('*'));
        let cron = Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_star: star(2),
            weekdays_star: star(4),
            hours_star: star(1),
        };
        // A date that never comes (`0 0 30 2 *`) would never run.
        if cron.weekdays_star && !cron.days_star {
            let possible = (1..=12u32).any(|m| {
                cron.months & (1 << m) != 0
                    && (1..=days_in_month(2000, m)).any(|d| cron.days & (1 << d) != 0)
            });
            if !possible {
                return Err(format!("`{expr}` names a day no month has"));
            }
        }
        Ok(cron)
    }

    fn day_ok(&self, y: i64, m: u32, d: u32) -> bool {
        let dom = self.days & (1 << d) != 0;
        let dow = self.weekdays & (1 << weekday(y, m, d)) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first wall-clock minute at or after `c` that matches (within
    /// about ten years: every valid expression matches sooner).
    fn next_civil(&self, c: Civil) -> Option<Civil> {
        let Civil {
            mut y,
            mut mo,
            mut d,
            mut h,
            mut mi,
        } = c;
        let last_year = y + 10;
        while y <= last_year {
            // A month not in the set, or past its last day: the next one.
            if self.months & (1 << mo) == 0 || d > days_in_month(y, mo) {
                (d, h, mi) = (1, 0, 0);
                mo += 1;
                if mo > 12 {
                    (y, mo) = (y + 1, 1);
                }
                continue;
            }
            if !self.day_ok(y, mo, d) {
                (h, mi) = (0, 0);
                d += 1;
                continue;
            }
            match next_bit(u64::from(self.hours), h, 23) {
                None => {
                    (h, mi) = (0, 0);
                    d += 1;
                    continue;
                }
                Some(nh) if nh != h => (h, mi) = (nh, 0),
                Some(_) => {}
            }
            match next_bit(self.minutes, mi, 59) {
                None => {
                    mi = 0;
                    h += 1;
                    if h > 23 {
                        h = 0;
                        d += 1;
                    }
                    continue;
                }
                Some(m) => mi = m,
            }
            return Some(Civil { y, mo, d, h, mi });
        }
        None
    }

    /// The next run strictly after `after` (seconds since the epoch) in
    /// `tz`; `None` when there is none within about ten years.
    pub fn next_after(&self, tz: &Zone, after: i64) -> Option<i64> {
        let main = self.search(tz, after, tz.offset_at(after));
        if !self.hours_star {
            return main;
        }
        // In the first pass of a repeated hour, the second pass comes
        // before the wall clock's next hour: an `*` hour runs in it too.
        let fold = match tz.resolve(after + i64::from(tz.offset_at(after))) {
            Local::Fold { after: later, .. } => Some(later),
            _ => None,
        };
        match fold.map(|o| self.search(tz, after, o)) {
            Some(Some(f)) => Some(main.map_or(f, |m| m.min(f))),
            _ => main,
        }
    }

    /// Search the wall clock from `after` as seen with offset `offset`.
    fn search(&self, tz: &Zone, after: i64, offset: i32) -> Option<i64> {
        let local = after + i64::from(offset);
        let mut c = Civil::from_secs(local - local.rem_euclid(60) + 60);
        // Each round moves at least a minute on; a year of minutes is far
        // more than any clock change asks for.
        for _ in 0..1000 {
            c = self.next_civil(c)?;
            let wall = c.to_secs();
            let found = match tz.resolve(wall) {
                Local::Unique(offset) => Some(wall - i64::from(offset)),
                Local::Gap { before, after: a } if !self.hours_star => {
                    Some(gap_end(tz, wall, before, a))
                }
                Local::Gap { .. } => None,
                Local::Fold { before, after: a } => {
                    let first = wall - i64::from(before);
                    let second = wall - i64::from(a);
                    if first > after {
                        Some(first)
                    } else if self.hours_star {
                        Some(second)
                    } else {
                        None
                    }
                }
            };
            if let Some(t) = found.filter(|&t| t > after) {
                return Some(t);
            }
            c = Civil::from_secs(wall + 60);
        }
        None
    }
}

/// The instant the clock jumped over the wall time `wall` (a gap from
/// offset `before` to `after`): the first minute whose offset is `after`.
fn gap_end(tz: &Zone, wall: i64, before: i32, after: i32) -> i64 {
    // At `lo` the old offset is in force, at `hi` the new one.
    let (mut lo, mut hi) = (wall - i64::from(after), wall - i64::from(before));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if tz.offset_at(mid) == after {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The lowest set bit of `bits` in `from..=hi`.
fn next_bit(bits: u64, from: u32, hi: u32) -> Option<u32> {
    (from..=hi).find(|&i| bits & (1 << i) != 0)
}

/// The time zone a job's times are in: the `TZ` it would see (see the
/// module's note for the forms). `None` or empty: UTC.
pub fn zone(tz: Option<&str>) -> Result<Zone, String> {
    let Some(name) = tz.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Zone::utc());
    };
    // glibc's form for "a file of the database".
    let name = name.strip_prefix(':').unwrap_or(name);
    if name.eq_ignore_ascii_case("UTC") || name == "Etc/UTC" || name == "UTC0" {
        return Ok(Zone::utc());
    }
    // A name of the database: letters, digits, `_+-`, `/` between parts.
    let db_name = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b))
        });
    let path = if name.starts_with('/') {
        Some(std::path::PathBuf::from(name))
    } else if db_name {
        let dir = std::env::var_os("TZDIR")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/usr/share/zoneinfo".into());
        Some(std::path::Path::new(&dir).join(name))
    } else {
        None
    };
    if let Some(path) = path {
        match read_tzif(&path) {
            Ok(data) => return Zone::from_tzif(name, &data).map_err(|e| format!("TZ={name}: {e}")),
            Err(e) if name.starts_with('/') => return Err(format!("TZ={name}: {e}")),
            Err(_) => {}
        }
    }
    Zone::from_posix(name).map_err(|e| {
        format!(
            "TZ={name}: no such time zone in the zoneinfo database, and not a POSIX TZ string ({e}); install tzdata in the image, or give a POSIX TZ string such as CET-1CEST,M3.5.0,M10.5.0/3"
        )
    })
}

/// A zoneinfo file: opened without blocking (a FIFO), a regular file only,
/// at most 1 MiB (one is a few KiB).
fn read_tzif(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut data)?;
    Ok(data)
}

/// `2026-12-07T18:00:00Z`: a time for `ctl status` and the log, in UTC.
pub fn rfc3339(t: i64) -> String {
    let c = Civil::from_secs(t);
    let s = t.rem_euclid(60);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.y, c.mo, c.d, c.h, c.mi, s
    )
}

#[cfg(test)]
mod tests;
