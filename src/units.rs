//! Units the operator writes and reads: durations and yes/no words; and
//! the one pseudo-random sequence.
//! Pure functions, no I/O (layer 0).

use std::time::Duration;

/// The longest duration the config accepts (ten years): any longer would
/// overflow a deadline computed from now.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Seconds as a duration, refused (None) when negative, not finite or over
/// `MAX_DURATION`.
pub fn duration_from_secs(f: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(f)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
}

/// `250ms` under a second, `1.5s` above: how the log and `ctl status`
/// show a duration.
pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The yes/no words of the original launcher's `key=value` arguments and of
/// circus INI files (YAML 1.1 booleans, any case); an empty value is no.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "y" => Some(true),
        "false" | "no" | "off" | "0" | "n" | "" => Some(false),
        _ => None,
    }
}

/// One step of xorshift64, the launcher's one pseudo-random sequence: the
/// jitter of restart backoff (no need for a crypto RNG) and, in tests, the
/// randomised cases (the same on every run).
pub fn xorshift_step(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A deterministic generator for the randomised tests (of the output
/// path, of cron): the same cases on every run.
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x = xorshift_step(x);
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_durations() {
        let rows = [
            ("True", Some(true)),
            ("yes", Some(true)),
            (" ON ", Some(true)),
            ("1", Some(true)),
            ("False", Some(false)),
            ("", Some(false)),
            ("off", Some(false)),
            ("maybe", None),
        ];
        for (text, want) in rows {
            assert_eq!(parse_bool(text), want, "{text:?}");
        }
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_from_secs(-1.0), None);
        assert_eq!(duration_from_secs(f64::NAN), None);
        assert_eq!(duration_from_secs(1e12), None);
        assert_eq!(duration_from_secs(0.5), Some(Duration::from_millis(500)));
    }
}
