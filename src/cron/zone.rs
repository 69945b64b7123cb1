//! Time zones for cron times: UTC, a TZif file of the image's zoneinfo
//! database (RFC 8536, versions 1 to 4, its POSIX footer for the times
//! after its last transition), or a POSIX TZ string. Only what the next
//! run needs: the offset in force at an instant, and what a wall-clock
//! time is (one instant, a gap, a fold). Leap seconds are ignored, as
//! every `right/`-less zoneinfo does.

/// A time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The name it was given by (`Europe/Paris`), `None` for UTC.
    pub name: Option<String>,
    /// Transition instants, ascending, and the offset from each on.
    transitions: Vec<(i64, i32)>,
    /// Before the first transition (or with none).
    initial: i32,
    /// After the last transition (a TZif footer, or the whole zone).
    rule: Option<Posix>,
}

/// What a wall-clock time is in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// One instant: the time minus this offset.
    Unique(i32),
    /// The clock jumped over it, from offset `before` to `after`.
    Gap { before: i32, after: i32 },
    /// It happens twice: first with `before`, then with `after`.
    Fold { before: i32, after: i32 },
}

/// A POSIX TZ rule: standard offset, and daylight saving time between two
/// dates of each year (offsets are seconds east of UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Posix {
    std: i32,
    dst: Option<(i32, Day, i32, Day, i32)>,
}

/// A day of the year in a POSIX rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Day {
    /// `Jn`: 1..=365, February 29 never counted.
    Julian(u32),
    /// `n`: 0..=365, February 29 counted.
    Zero(u32),
    /// `Mm.w.d`: month, week 1..=5 (5: the last), weekday (0: Sunday).
    Month(u32, u32, u32),
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            name: None,
            transitions: Vec::new(),
            initial: 0,
            rule: None,
        }
    }

    /// The offset (seconds east of UTC) in force at `t`.
    pub fn offset_at(&self, t: i64) -> i32 {
        match self.transitions.partition_point(|&(at, _)| at <= t) {
            0 if self.transitions.is_empty() => self.rule.map_or(self.initial, |r| r.offset_at(t)),
            0 => self.initial,
            n if n == self.transitions.len() => match self.rule {
                Some(r) => r.offset_at(t),
                None => self.transitions.last().map_or(self.initial, |x| x.1),
            },
            n => self.transitions.get(n - 1).map_or(self.initial, |x| x.1),
        }
    }

    /// What the wall-clock time `wall` (seconds, as if UTC) is. A zone
    /// changes its offset at most once within a day of any time.
    pub fn resolve(&self, wall: i64) -> Local {
        let mut offsets: Vec<i32> = [wall - 86_400, wall, wall + 86_400]
            .iter()
            .map(|&t| self.offset_at(t))
            .collect();
        offsets.dedup();
        let mut valid: Vec<i32> = offsets
            .iter()
            .copied()
            .filter(|&o| self.offset_at(wall - i64::from(o)) == o)
            .collect();
        valid.sort_unstable_by(|a, b| b.cmp(a));
        valid.dedup();
        match (valid.as_slice(), offsets.as_slice()) {
            ([o], _) => Local::Unique(*o),
            // The earlier instant is the one with the larger offset.
            ([first, second, ..], _) => Local::Fold {
                before: *first,
                after: *second,
            },
            ([], [before, .., after]) => Local::Gap {
                before: *before,
                after: *after,
            },
            ([], _) => Local::Unique(self.offset_at(wall)),
        }
    }

    /// A TZif file's zone (RFC 8536).
    pub fn from_tzif(name: &str, data: &[u8]) -> Result<Zone, String> {
        let bad = |what: &str| format!("not a time zone file ({what})");
        let (v1, rest) = block(data, 4).ok_or_else(|| bad("header"))?;
        let version = data.get(4).copied().unwrap_or(0);
        let (b, footer) = if version >= b'2' {
            let (b, after) = block(rest, 8).ok_or_else(|| bad("version 2 data"))?;
            (b, after)
        } else {
            (v1, &[][..])
        };
        let mut types = Vec::with_capacity(b.types.len());
        for t in &b.types {
            types.push(*t);
        }
        let initial = types
            .first()
            .copied()
            .ok_or_else(|| bad("no local time type"))?;
        let mut transitions = Vec::with_capacity(b.times.len());
        for (at, &i) in b.times.iter().zip(&b.indices) {
            let off = types
                .get(usize::from(i))
                .copied()
                .ok_or_else(|| bad("type index"))?;
            transitions.push((*at, off));
        }
        // The footer: `\nTZ\n`, empty when the zone has no rule.
        let text = std::str::from_utf8(footer).map_err(|_| bad("footer"))?;
        let rule_text = text.trim_matches('\n');
        let rule = if rule_text.is_empty() {
            None
        } else {
            Some(Posix::parse(rule_text).map_err(|e| bad(&format!("footer: {e}")))?)
        };
        Ok(Zone {
            name: Some(name.to_string()),
            transitions,
            initial,
            rule,
        })
    }

    /// A POSIX TZ string's zone (`CET-1CEST,M3.5.0,M10.5.0/3`).
    pub fn from_posix(text: &str) -> Result<Zone, String> {
        let rule = Posix::parse(text)?;
        Ok(Zone {
            name: Some(text.to_string()),
            transitions: Vec::new(),
            initial: rule.std,
            rule: Some(rule),
        })
    }
}

/// One data block of a TZif file: times (4 or 8 bytes each), type indices,
/// the types' offsets; and what follows the block.
struct Block {
    times: Vec<i64>,
    indices: Vec<u8>,
    types: Vec<i32>,
}

fn block(data: &[u8], width: usize) -> Option<(Block, &[u8])> {
    if data.get(..4)? != b"TZif" {
        return None;
    }
    let count = |i: usize| -> Option<usize> {
        let b = data.get(20 + 4 * i..24 + 4 * i)?;
        Some(u32::from_be_bytes(b.try_into().ok()?) as usize)
    };
    let (isut, isstd, leap, time, typ, chars) = (
        count(0)?,
        count(1)?,
        count(2)?,
        count(3)?,
        count(4)?,
        count(5)?,
    );
    let body = data.get(44..)?;
    let times_len = time.checked_mul(width)?;
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = body.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let times_raw = take(times_len)?;
    let indices = take(time)?.to_vec();
    let types_raw = take(typ.checked_mul(6)?)?;
    take(chars)?;
    take(leap.checked_mul(width + 4)?)?;
    take(isstd)?;
    take(isut)?;
    let times = times_raw
        .chunks_exact(width)
        .map(|c| match c.len() {
            8 => i64::from_be_bytes(c.try_into().unwrap_or([0; 8])),
            _ => i64::from(i32::from_be_bytes(c.try_into().unwrap_or([0; 4]))),
        })
        .collect();
    let types = types_raw
        .chunks_exact(6)
        .map(|c| {
            c.get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i32::from_be_bytes)
        })
        .collect();
    Some((
        Block {
            times,
            indices,
            types,
        },
        body.get(at..)?,
    ))
}

impl Posix {
    fn parse(text: &str) -> Result<Posix, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        p.name()?;
        // POSIX offsets are west of UTC: `CET-1` is UTC+1.
        let std = -p.offset()?;
        if p.done() {
            return Ok(Posix { std, dst: None });
        }
        p.name()?;
        let dst_off = if p.peek().is_some_and(|c| c != b',') {
            -p.offset()?
        } else {
            std + 3600
        };
        let (start, start_t, end, end_t) = if p.done() {
            // glibc's default: the United States' rules.
            (Day::Month(3, 2, 0), 7200, Day::Month(11, 1, 0), 7200)
        } else {
            p.expect(b',')?;
            let start = p.day()?;
            let start_t = p.time_opt()?;
            p.expect(b',')?;
            let end = p.day()?;
            let end_t = p.time_opt()?;
            (start, start_t, end, end_t)
        };
        if !p.done() {
            return Err(format!("`{text}`: unexpected text at {}", p.i + 1));
        }
        Ok(Posix {
            std,
            dst: Some((dst_off, start, start_t, end, end_t)),
        })
    }

    fn offset_at(&self, t: i64) -> i32 {
        let Some((dst, start, start_t, end, end_t)) = self.dst else {
            return self.std;
        };
        let year = super::civil::Civil::from_secs(t + i64::from(self.std)).y;
        // Both changes happen at a wall-clock time: the start in standard
        // time, the end in daylight saving time.
        let begins = start.date(year) * 86_400 + i64::from(start_t) - i64::from(self.std);
        let ends = end.date(year) * 86_400 + i64::from(end_t) - i64::from(dst);
        let in_dst = if begins < ends {
            begins <= t && t < ends
        } else {
            // The southern hemisphere: summer spans the new year.
            !(ends <= t && t < begins)
        };
        if in_dst {
            dst
        } else {
            self.std
        }
    }
}

impl Day {
    /// Days since the epoch of this day in `year`.
    fn date(self, year: i64) -> i64 {
        let jan1 = super::civil::days_from_civil(year, 1, 1);
        match self {
            Day::Julian(n) => {
                let leap = super::civil::is_leap(year) && n >= 60;
                jan1 + i64::from(n) - 1 + i64::from(leap)
            }
            Day::Zero(n) => jan1 + i64::from(n),
            Day::Month(m, w, d) => {
                let first = super::civil::days_from_civil(year, m, 1);
                let wd_first = (first + 4).rem_euclid(7);
                let mut day = (i64::from(d) - wd_first).rem_euclid(7) + 7 * (i64::from(w) - 1);
                while day >= i64::from(super::civil::days_in_month(year, m)) {
                    day -= 7;
                }
                first + day
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at {}", c as char, self.i + 1))
        }
    }
    /// `CET` (3 letters or more) or `<+0530>`.
    fn name(&mut self) -> Result<(), String> {
        let start = self.i;
        if self.peek() == Some(b'<') {
            while self.peek().is_some_and(|c| c != b'>') {
                self.i += 1;
            }
            self.expect(b'>')?;
            return Ok(());
        }
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.i += 1;
        }
        if self.i - start < 3 {
            return Err(format!("a zone name of 3 letters or more at {}", start + 1));
        }
        Ok(())
    }
    fn number(&mut self, max: u32) -> Result<u32, String> {
        let start = self.i;
        let mut v: u32 = 0;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            v = v.saturating_mul(10).saturating_add(u32::from(c - b'0'));
            self.i += 1;
        }
        if self.i == start || v > max {
            return Err(format!("a number up to {max} at {}", start + 1));
        }
        Ok(v)
    }
    /// `[+-]hh[:mm[:ss]]` in seconds (hours up to 167, RFC 8536).
    fn hms(&mut self) -> Result<i32, String> {
        let sign = match self.peek() {
            Some(b'-') => {
                self.i += 1;
                -1
            }
            Some(b'+') => {
                self.i += 1;
                1
            }
            _ => 1,
        };
        let mut secs = self.number(167)? * 3600;
        for unit in [60, 1] {
            if self.peek() != Some(b':') {
                break;
            }
            self.i += 1;
            secs += self.number(59)? * unit;
        }
        Ok(sign * secs as i32)
    }
    fn offset(&mut self) -> Result<i32, String> {
        self.hms()
    }
    fn time_opt(&mut self) -> Result<i32, String> {
        if self.peek() == Some(b'/') {
            self.i += 1;
            self.hms()
        } else {
            Ok(7200)
        }
    }
    fn day(&mut self) -> Result<Day, String> {
        match self.peek() {
            Some(b'J') => {
                self.i += 1;
                let n = self.number(365)?;
                if n == 0 {
                    return Err("J0: days count from J1".into());
                }
                Ok(Day::Julian(n))
            }
            Some(b'M') => {
                self.i += 1;
                let m = self.number(12)?;
                self.expect(b'.')?;
                let w = self.number(5)?;
                self.expect(b'.')?;
                let d = self.number(6)?;
                if m == 0 || w == 0 {
                    return Err("Mm.w.d: month and week count from 1".into());
                }
                Ok(Day::Month(m, w, d))
            }
            _ => Ok(Day::Zero(self.number(365)?)),
        }
    }
}
