//! How one record of output is written (README "Logging and metrics"):
//! the text framing (`web | line`, continuations `web+ | line`) or one JSON
//! object per line, the RFC 3339 time stamp, and where a line too long for
//! `log.max_line` is cut. Each place where the formats differ is a `match`
//! on `LogFormat` here (and the relay's fast path in `output::relay`): a
//! new format is a variant of `LogFormat`, and the compiler names the rest.
//! Layer 2.

use super::frame::{escape_json, escape_len, REPLACEMENT};
use crate::config::model::{LogCfg, LogFormat, DEFAULT_MAX_LINE};
use std::sync::atomic::{AtomicU64, Ordering};

/// How records are written: the format, and the longest record
/// (`log.format`, `log.max_line`). A value, passed to whoever frames: the
/// loop takes it from the config it runs on, the launcher's logger from
/// what the app last set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub format: LogFormat,
    pub max_line: usize,
}

impl Framing {
    /// Before the config is read: text, 16 KiB.
    pub const DEFAULT: Framing = Framing {
        format: LogFormat::Text,
        max_line: DEFAULT_MAX_LINE,
    };

    pub fn of(log: &LogCfg) -> Framing {
        Framing {
            format: log.format,
            max_line: log.max_line,
        }
    }
}

impl Default for Framing {
    fn default() -> Framing {
        Framing::DEFAULT
    }
}

/// Numbers the split lines of the whole process: with `service` and
/// `stream`, a `partial_id` names one line.
static PARTIAL: AtomicU64 = AtomicU64::new(1);

pub fn next_partial_id() -> u64 {
    PARTIAL.fetch_add(1, Ordering::Relaxed)
}

/// The time stamp a batch of records in `format` carries: `None` for a
/// format without one (no clock read).
pub fn batch_timestamp(format: LogFormat) -> [u8; 24] {
    match format {
        LogFormat::Text => [0u8; 24],
        LogFormat::Json => timestamp(),
    }
}

/// `2026-12-02T12:00:00.123Z` for now (UTC, milliseconds): always 24 bytes.
pub fn timestamp() -> [u8; 24] {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    timestamp_at(d.as_secs(), d.subsec_millis())
}

/// The RFC 3339 form of `secs` since the epoch, and `millis`.
pub fn timestamp_at(secs: u64, millis: u32) -> [u8; 24] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (0..width).rev() {
            if let Some(b) = out.get_mut(at + i) {
                *b = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(d));
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, u64::from(millis.min(999)));
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's civil_from_days, in 400-year eras).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// How many bytes of `data` go into a piece whose payload may take at
/// most `budget` bytes once written, cutting between characters (a
/// multi-byte character is never split, so each piece stays valid UTF-8
/// and the pieces join back exactly). With `ends`, `data` is the rest of
/// a line: an incomplete sequence at its end is invalid, not to wait for.
/// Never 0 for a non-empty `data` with `ends` and `budget >= 6`.
pub fn cut(format: LogFormat, data: &[u8], budget: usize, ends: bool) -> usize {
    match format {
        LogFormat::Text => cut_text(data, budget),
        LogFormat::Json => cut_json(data, budget, ends),
    }
}

/// `cut` for text: bytes as they are.
fn cut_text(data: &[u8], budget: usize) -> usize {
    {
        if data.len() <= budget {
            return data.len();
        }
        // Back up to the start of a UTF-8 character when that is near:
        // a reader of the text sees whole characters in each record.
        let mut n = budget;
        let mut backed = 0;
        while n > 0 && backed < 3 && data.get(n).is_some_and(|b| b & 0xC0 == 0x80) {
            n -= 1;
            backed += 1;
        }
        let whole = n > 0 && data.get(n).is_some_and(|b| b & 0xC0 != 0x80);
        if whole {
            n
        } else {
            budget
        }
    }
}

/// `cut` for JSON: what each character takes once escaped.
fn cut_json(data: &[u8], budget: usize, ends: bool) -> usize {
    let mut used = 0usize;
    let mut pos = 0usize;
    for chunk in data.utf8_chunks() {
        for c in chunk.valid().chars() {
            let w = match c.len_utf8() {
                1 => match escape_len(c as u8) {
                    0 => 1,
                    e => e,
                },
                n => n,
            };
            if used + w > budget {
                return pos;
            }
            used += w;
            pos += c.len_utf8();
        }
        let bad = chunk.invalid();
        if bad.is_empty() {
            continue;
        }
        let at_end = pos + bad.len() == data.len();
        if at_end && !ends && bad.len() < 4 && incomplete(bad) {
            // The rest of this character has not been read yet.
            return pos;
        }
        if used + REPLACEMENT.len() > budget {
            return pos;
        }
        used += REPLACEMENT.len();
        pos += bad.len();
    }
    pos
}

/// `bad` is the start of a multi-byte character that more bytes may finish.
fn incomplete(bad: &[u8]) -> bool {
    let need = match bad.first() {
        Some(b) if b & 0xE0 == 0xC0 => 2,
        Some(b) if b & 0xF0 == 0xE0 => 3,
        Some(b) if b & 0xF8 == 0xF0 => 4,
        _ => return false,
    };
    bad.len() < need && bad.iter().skip(1).all(|b| b & 0xC0 == 0x80)
}

/// How a record names its source.
pub struct Head {
    /// Text: `web | `, or `web ! ` for stderr.
    pub prefix: Vec<u8>,
    /// Text, on the records after the first of a split line: `web+ | `.
    pub cont: Vec<u8>,
    /// JSON: `","service":"web","stream":"stdout","msg":"` (after the
    /// time stamp).
    pub json: Vec<u8>,
}

/// JSON overhead of a record besides `Head::json` and the message:
/// `{"ts":"` + 24 + `` + `"}` + newline.
const JSON_FIXED: usize = 7 + 24 + 2 + 1;
/// What `partial_id` and `partial_last` may add:
/// `,"partial_id":` + 20 digits + `,"partial_last":false`.
const JSON_PARTIAL: usize = 14 + 20 + 21;
/// The least payload a piece carries, however long a name: progress.
const MIN_PAYLOAD: usize = 64;

impl Head {
    /// The head of `name`'s `stream` (`stdout`, `stderr`); `sep` is `|`
    /// or `!`.
    pub fn service(name: &str, stream: &str, sep: char) -> Head {
        let mut json = b"\",\"service\":\"".to_vec();
        escape_json(name.as_bytes(), &mut json);
        json.extend_from_slice(b"\",\"stream\":\"");
        json.extend_from_slice(stream.as_bytes());
        json.extend_from_slice(b"\",\"msg\":\"");
        Head {
            prefix: format!("{name} {sep} ").into_bytes(),
            cont: format!("{name}+ {sep} ").into_bytes(),
            json,
        }
    }

    /// The payload one record may carry: a whole line (`split` false), or
    /// a piece of a split line (`first`: the first piece).
    pub fn budget(&self, framing: Framing, split: bool, first: bool) -> usize {
        let overhead = match framing.format {
            LogFormat::Json => JSON_FIXED + self.json.len() + if split { JSON_PARTIAL } else { 0 },
            LogFormat::Text if first => self.prefix.len() + 1,
            LogFormat::Text => self.cont.len() + 1,
        };
        framing.max_line.saturating_sub(overhead).max(MIN_PAYLOAD)
    }

    /// `{"ts":"…` and the rest of the envelope before the message: the
    /// same for every record of a batch, so built once for it.
    pub fn json_start(&self, ts: &[u8; 24]) -> Vec<u8> {
        let mut v = Vec::with_capacity(7 + 24 + self.json.len());
        v.extend_from_slice(b"{\"ts\":\"");
        v.extend_from_slice(ts);
        v.extend_from_slice(&self.json);
        v
    }

    /// One record of `payload` into `out`. `partial`: the line's id, and
    /// whether this is its last piece; `first`: the first piece.
    pub fn write(
        &self,
        format: LogFormat,
        ts: &[u8; 24],
        payload: &[u8],
        partial: Option<(u64, bool)>,
        first: bool,
        out: &mut Vec<u8>,
    ) {
        match format {
            LogFormat::Text => {
                out.extend_from_slice(if first { &self.prefix } else { &self.cont });
                out.extend_from_slice(payload);
                out.push(b'\n');
            }
            LogFormat::Json => self.write_json(ts, payload, partial, out),
        }
    }

    fn write_json(
        &self,
        ts: &[u8; 24],
        payload: &[u8],
        partial: Option<(u64, bool)>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"{\"ts\":\"");
        out.extend_from_slice(ts);
        out.extend_from_slice(&self.json);
        escape_json(payload, out);
        out.push(b'"');
        if let Some((id, last)) = partial {
            out.extend_from_slice(b",\"partial_id\":");
            out.extend_from_slice(id.to_string().as_bytes());
            out.extend_from_slice(if last {
                b",\"partial_last\":true"
            } else {
                b",\"partial_last\":false"
            });
        }
        out.extend_from_slice(b"}\n");
    }
}

/// A line of the launcher's own, as `mc-launcher: warning: …` or a JSON
/// record with `level`; `service` is `mc-launcher` unless the line is
/// about one service (a rate-limit note). Split like a service's line
/// when longer than `log.max_line`.
pub fn launcher_line(
    framing: Framing,
    level: log::Level,
    service: Option<&str>,
    msg: &str,
    out: &mut Vec<u8>,
) {
    let lvl = match level {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    let ts = batch_timestamp(framing.format);
    // A message of several lines is one record: its newlines escaped in
    // JSON, kept in text (as before: a multi-line error stays readable).
    let payload = msg.as_bytes();
    match framing.format {
        LogFormat::Json => {
            let mut j = b"\",\"service\":\"".to_vec();
            escape_json(service.unwrap_or("mc-launcher").as_bytes(), &mut j);
            j.extend_from_slice(b"\",\"stream\":\"launcher\",\"level\":\"");
            j.extend_from_slice(lvl.as_bytes());
            j.extend_from_slice(b"\",\"msg\":\"");
            let head = Head {
                prefix: Vec::new(),
                cont: Vec::new(),
                json: j,
            };
            split(&head, framing, &ts, payload, out);
        }
        LogFormat::Text => {
            let tag = match level {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                log::Level::Info => "",
                log::Level::Debug => "debug: ",
                log::Level::Trace => "trace: ",
            };
            let about = service.map(|s| format!("{s}: ")).unwrap_or_default();
            let head = Head {
                prefix: format!("mc-launcher: {tag}{about}").into_bytes(),
                cont: format!("mc-launcher+: {tag}{about}").into_bytes(),
                json: Vec::new(),
            };
            let payload = payload.strip_suffix(b"\n").unwrap_or(payload);
            split(&head, framing, &ts, &escape_text(payload), out);
        }
    }
}

/// A launcher message for the text log: it may quote untrusted strings
/// (file names from the volume, a pillar path), so no byte of it may
/// forge a line or drive the terminal. Control characters (C0 but the
/// newline and the tab, DEL, and C1 written in UTF-8) become `\xNN`
/// (`\r`, `\u{NN}` for C1); a newline stays (a multi-line error stays
/// readable) but a next line that does not start with a blank is indented
/// by two spaces, so that no line of a message starts like a record of the
/// launcher's own.
pub fn escape_text(msg: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let c1 = |w: &[u8]| matches!(w, [0xc2, 0x80..=0x9f]);
    let special = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    if !msg.iter().any(|&b| special(b)) && !msg.windows(2).any(c1) {
        return std::borrow::Cow::Borrowed(msg);
    }
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut i = 0;
    while let Some(&b) = msg.get(i) {
        let next = msg.get(i + 1).copied();
        match b {
            b'\n' => {
                out.push(b'\n');
                // A line the message indents itself (an error's details)
                // already cannot pass for a record.
                if !matches!(next, Some(b' ' | b'\t')) {
                    out.extend_from_slice(b"  ");
                }
            }
            b'\r' => out.extend_from_slice(b"\\r"),
            0xc2 if next.is_some_and(|n| (0x80..=0x9f).contains(&n)) => {
                out.extend_from_slice(format!("\\u{{{:02x}}}", next.unwrap_or(0)).as_bytes());
                i += 1;
            }
            b if special(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            b => out.push(b),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// `payload` (a whole line) as one record, or as pieces when too long.
pub fn split(head: &Head, framing: Framing, ts: &[u8; 24], payload: &[u8], out: &mut Vec<u8>) {
    let format = framing.format;
    let whole = head.budget(framing, false, true);
    if cut(format, payload, whole, true) == payload.len() {
        head.write(format, ts, payload, None, true, out);
        return;
    }
    let id = next_partial_id();
    let mut pos = 0;
    let mut first = true;
    loop {
        let rest = payload.get(pos..).unwrap_or_default();
        let n = cut(format, rest, head.budget(framing, true, first), true);
        let last = n >= rest.len();
        head.write(
            format,
            ts,
            rest.get(..n).unwrap_or_default(),
            Some((id, last)),
            first,
            out,
        );
        if last {
            return;
        }
        pos += n;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::random_bytes;
    use crate::proc::Draw::{Any, Byte, Control, Lower};

    #[test]
    fn text_messages_cannot_forge_lines_or_drive_the_terminal() {
        let rows: &[(&[u8], &[u8])] = &[
            (b"plain: ok", b"plain: ok"),
            (b"tab\there", b"tab\there"),
            (
                b"a\nmc-launcher: exit 0: forged",
                b"a\n  mc-launcher: exit 0: forged",
            ),
            (b"error:\n  detail\n\tmore", b"error:\n  detail\n\tmore"),
            (b"cr\rover", b"cr\\rover"),
            (b"\x1b[2Jclear", b"\\x1b[2Jclear"),
            (b"del\x7f", b"del\\x7f"),
            ("c1 \u{9b}31m".as_bytes(), b"c1 \\u{9b}31m"),
            ("caf\u{e9}".as_bytes(), "caf\u{e9}".as_bytes()),
        ];
        for (msg, want) in rows {
            assert_eq!(
                &*escape_text(msg),
                *want,
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let rows: &[(u64, u32, &str)] = &[
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.005Z"),
            (1_796_212_800, 123, "2026-12-02T12:00:00.123Z"),
            (4_107_542_399, 999, "2100-02-28T23:59:59.999Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000Z"),
        ];
        for (secs, ms, want) in rows {
            let got = timestamp_at(*secs, *ms);
            assert_eq!(std::str::from_utf8(&got).expect("ascii"), *want);
        }
    }

    #[test]
    fn json_escaping_of_arbitrary_bytes() {
        let rows: &[(&[u8], &str)] = &[
            (b"plain", "plain"),
            (
                b"a longer plain line, no escape",
                "a longer plain line, no escape",
            ),
            (b"12345678\"12345678\\", "12345678\\\"12345678\\\\"),
            (b"1234567\x1f1234567\x7f", "1234567\\u001f1234567\x7f"),
            (b"a\"b\\c", "a\\\"b\\\\c"),
            (b"\n\t\r\x00\x1f\x7f", "\\n\\t\\r\\u0000\\u001f\x7f"),
            ("é€😀".as_bytes(), "é€😀"),
            (b"\xff\xfeok\xc3", "\u{fffd}\u{fffd}ok\u{fffd}"),
        ];
        for (input, want) in rows {
            let mut out = Vec::new();
            escape_json(input, &mut out);
            assert_eq!(String::from_utf8(out).expect("utf-8"), *want);
            let quoted = format!("\"{want}\"");
            let back: String = serde_json::from_str(&quoted).expect("valid JSON");
            assert_eq!(back, String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn escaping_random_bytes_gives_json_that_reads_back_lossily() {
        let mut next = crate::units::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..3000 {
            let len = (next() % 40) as usize;
            // Mostly ASCII, some of everything else.
            let rare = [Any, Control, Byte(b'"'), Byte(b'\\')];
            let bytes = random_bytes(&mut next, len, &rare, 10, Lower);
            let mut out = b"\"".to_vec();
            escape_json(&bytes, &mut out);
            out.push(b'"');
            let back: String = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(back, String::from_utf8_lossy(&bytes), "{bytes:?}");
            // What cut counts is what escaping writes.
            let mut esc = Vec::new();
            escape_json(&bytes, &mut esc);
            assert_eq!(
                cut(LogFormat::Json, &bytes, esc.len(), true),
                bytes.len(),
                "{bytes:?}"
            );
            if !bytes.is_empty() {
                assert!(
                    cut(LogFormat::Json, &bytes, esc.len() - 1, true) < bytes.len(),
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn cuts_fit_the_budget_and_keep_characters_whole() {
        // (format, data, budget, ends, want)
        let rows: &[(LogFormat, &[u8], usize, bool, usize)] = &[
            (LogFormat::Text, b"abcdef", 4, false, 4),
            (LogFormat::Text, b"abcdef", 10, true, 6),
            (LogFormat::Text, "aé".as_bytes(), 2, true, 1),
            (LogFormat::Text, "a😀".as_bytes(), 4, true, 1),
            (LogFormat::Text, b"\x80\x80\x80\x80\x80", 4, true, 4),
            (LogFormat::Json, b"ab\"cd", 3, true, 2),
            (LogFormat::Json, b"a\x01b", 6, true, 1),
            (LogFormat::Json, b"a\x01b", 7, true, 2),
            (LogFormat::Json, "a€".as_bytes(), 3, true, 1),
            (LogFormat::Json, b"ab\xe2\x82", 10, false, 2),
            (LogFormat::Json, b"ab\xe2\x82", 10, true, 4),
            (LogFormat::Json, b"ab\xffcd", 5, true, 3),
        ];
        for (format, data, budget, ends, want) in rows {
            assert_eq!(
                cut(*format, data, *budget, *ends),
                *want,
                "{format:?} {data:?} {budget} {ends}"
            );
        }
    }

    #[test]
    fn split_records_fit_and_join_back() {
        let head = Head::service("web", "stdout", '|');
        let line: Vec<u8> = (0..5000u32)
            .map(|i| match i % 7 {
                0 => b'"',
                1 => 0x01,
                _ => b'a' + (i % 26) as u8,
            })
            .collect();
        for format in [LogFormat::Text, LogFormat::Json] {
            let json = format == LogFormat::Json;
            let framing = Framing {
                format,
                max_line: 1024,
            };
            let mut out = Vec::new();
            split(&head, framing, &timestamp(), &line, &mut out);
            let mut joined = Vec::new();
            for rec in out.split_inclusive(|&b| b == b'\n') {
                assert!(rec.len() <= 1024, "{} > 1024", rec.len());
                if json {
                    let v: serde_json::Value = serde_json::from_slice(rec).expect("json");
                    joined.extend_from_slice(v["msg"].as_str().expect("msg").as_bytes());
                } else {
                    let body = rec
                        .strip_prefix(b"web | ")
                        .or_else(|| rec.strip_prefix(b"web+ | "))
                        .expect("framed");
                    joined.extend_from_slice(body.strip_suffix(b"\n").expect("newline"));
                }
            }
            assert_eq!(joined, line, "json {json}");
        }
    }

    /// The relay's fast loops (`frame`) write exactly the records `Head`
    /// says a record is.
    mod fast_paths {
        use super::super::*;
        use crate::proc::frame::{
            escape_ascii, json_lines, json_lines_portable, text_lines, text_lines_portable,
        };
        use crate::proc::random_bytes;
        use crate::proc::Draw::{Byte, Control, Lower};

        /// `before`, then what `Head::write` makes of each whole line of
        /// `framed`: the records the loops must write.
        fn head_records(
            head: &Head,
            format: LogFormat,
            ts: &[u8; 24],
            before: &[u8],
            framed: &[u8],
        ) -> Vec<u8> {
            let mut want = before.to_vec();
            for line in framed.split_inclusive(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\n").expect("whole line");
                head.write(format, ts, line, None, true, &mut want);
            }
            want
        }

        #[test]
        fn text_lines_are_the_records_head_writes() {
            let head = Head::service("web", "stdout", '|');
            // (data, whole, consumed)
            let rows: &[(&[u8], usize, usize)] = &[
                (b"", 100, 0),
                (b"no newline yet", 100, 0),
                (b"a\nbb\n", 100, 5),
                (b"a\nbb\nccc", 100, 5),
                (b"\n\n\n", 100, 3),
                (b"short\nthis one is too long\nnext\n", 10, 6),
                (b"exactly ten\n", 11, 12),
                (b"exactly ten\n", 10, 0),
            ];
            for (data, whole, consumed) in rows {
                let mut out = b"before".to_vec();
                let n = text_lines(&head.prefix, *whole, data, &mut out);
                assert_eq!(n, *consumed, "{data:?}");
                assert_eq!(
                    out,
                    head_records(&head, LogFormat::Text, &[0; 24], b"before", &data[..n]),
                    "{data:?}"
                );
            }
        }

        #[test]
        fn json_lines_are_the_records_head_writes() {
            let head = Head::service("w\"0", "stderr", '!');
            let ts = timestamp();
            let start = head.json_start(&ts);
            let long = "x".repeat(100);
            let rows: &[(&[u8], bool)] = &[
                (b"", true),
                (b"plain", true),
                (long.as_bytes(), true),
                (b"0123456789abcdef", true),
                (b"0123456789abcde\"", true),
                (
                    b"tab\there, quote \" and \\ and \x01 and \x7f, past sixteen",
                    true,
                ),
                (
                    b"\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f",
                    true,
                ),
                ("caf\u{e9} au lait, longer than a block".as_bytes(), false),
                (b"0123456789abcdefghij\xff", false),
            ];
            for (line, ascii) in rows {
                // The fast escaper takes exactly the ASCII lines.
                assert_eq!(escape_ascii(line, &mut Vec::new()), *ascii, "{line:?}");
                // Each line, as a batch of one, is the record Head::write makes.
                let data = [*line, b"\n"].concat();
                let mut out = b"[".to_vec();
                let n = json_lines(&start, 1000, 2000, &data, &mut out);
                assert_eq!(n, data.len(), "{line:?}");
                let mut want = b"[".to_vec();
                head.write(LogFormat::Json, &ts, line, None, true, &mut want);
                assert_eq!(out, want, "{line:?}");
                let v: serde_json::Value =
                    serde_json::from_slice(out.get(1..).expect("record")).expect("JSON");
                let msg = v["msg"].as_str().expect("msg");
                assert_eq!(msg, String::from_utf8_lossy(line), "{line:?}");
            }
        }

        /// Random batches of lines (ASCII, escapes, UTF-8, invalid bytes,
        /// long lines, a partial last line): the 16-byte loops frame exactly
        /// what the line-at-a-time ones do, stop at the same line, and each
        /// record is what `Head::write` makes of its line.
        #[test]
        fn batch_loops_agree_with_the_line_at_a_time_ones() {
            let mut next = crate::units::xorshift(0x1234_5678_9abc_def1);
            let head = Head::service("svc", "stdout", '|');
            let ts = timestamp();
            let start = head.json_start(&ts);
            for round in 0..3000 {
                let mut data = Vec::new();
                for _ in 0..(next() % 8) {
                    let len = match next() % 10 {
                        0 => (next() % 400) as usize,
                        _ => (next() % 40) as usize,
                    };
                    let rare = [
                        Control,
                        Byte(b'"'),
                        Byte(b'\\'),
                        Byte(0xc3),
                        Byte(0xa9),
                        Byte(0xff),
                    ];
                    data.extend(random_bytes(&mut next, len, &rare, 40, Lower));
                    data.retain(|&b| b != b'\n');
                    data.push(b'\n');
                }
                // A line not ended yet, sometimes.
                data.extend(std::iter::repeat_n(b'z', (next() % 3) as usize));
                let whole = [5usize, 17, 64, 100, 1000][round % 5];
                let max = whole + start.len() + 3;
                let mut fast = b"x".to_vec();
                let mut slow = b"x".to_vec();
                let a = text_lines(&head.prefix, whole, &data, &mut fast);
                let b = text_lines_portable(&head.prefix, whole, &data, &mut slow);
                assert_eq!((a, &fast), (b, &slow), "text {data:?} {whole}");
                assert_eq!(
                    fast,
                    head_records(&head, LogFormat::Text, &ts, b"x", &data[..a])
                );
                let mut fast = b"x".to_vec();
                let mut slow = b"x".to_vec();
                let a = json_lines(&start, whole, max, &data, &mut fast);
                let b = json_lines_portable(&start, whole, max, &data, &mut slow);
                assert_eq!((a, &fast), (b, &slow), "json {data:?} {whole}");
                assert_eq!(
                    fast,
                    head_records(&head, LogFormat::Json, &ts, b"x", &data[..a])
                );
                // What stopped the loop: the end, a partial line, or a line
                // too long for one record.
                let rest = data.get(a..).expect("rest");
                if let Some(nl) = memchr::memchr(b'\n', rest) {
                    let line = rest.get(..nl).expect("line");
                    let mut esc = Vec::new();
                    escape_json(line, &mut esc);
                    assert!(
                        esc.len() > whole || start.len() + esc.len() + 3 > max,
                        "{rest:?}"
                    );
                }
            }
        }
    }
}
