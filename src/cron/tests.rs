use super::*;

/// `2026-03-29T01:00:00Z` → seconds since the epoch.
fn at(s: &str) -> i64 {
    let ts: jiff::Timestamp = s.parse().expect("a timestamp");
    ts.as_second()
}

fn next(expr: &str, tz: &str, after: &str) -> String {
    let cron = Cron::parse(expr).expect(expr);
    let tz = zone(Some(tz)).expect(tz);
    match cron.next_after(&tz, at(after)) {
        Some(t) => rfc3339(t),
        None => "never".into(),
    }
}

#[test]
fn parse_errors_name_the_field_and_the_fix() {
    let rows: &[(&str, &str)] = &[
        ("* * * *", "has 4 fields"),
        ("* * * * * *", "has 6 fields"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("* 24 * * *", "hour: 24 is out of range 0-23"),
        ("* * 0 * *", "day of month: 0 is out of range 1-31"),
        ("* * * 13 *", "month: 13 is out of range 1-12"),
        ("* * * * 8", "day of week: 8 is out of range 0-7"),
        ("5-1 * * * *", "range 5-1 goes backwards"),
        ("*/0 * * * *", "bad step `/0`"),
        ("x * * * *", "`x` is not a number"),
        ("1,,2 * * * *", "empty item"),
        ("0 0 30 2 *", "names a day no month has"),
        ("0 0 31 4,6,9,11 *", "names a day no month has"),
        ("@often", "unknown shorthand `@often`"),
    ];
    for (expr, want) in rows {
        match Cron::parse(expr) {
            Ok(c) => panic!("{expr}: accepted as {c:?}"),
            Err(e) => assert!(e.contains(want), "{expr}: {e}"),
        }
    }
    for ok in [
        "*/15 9-17 * * mon-fri",
        "0 0 29 2 *",
        "0 0 30 2 1",
        "0 22 * * SUN,7",
        "5/20 * * * *",
        "@Daily",
        "  0 3 * jan,JUL *  ",
    ] {
        assert!(Cron::parse(ok).is_ok(), "{ok}");
    }
}

#[test]
fn next_run_in_utc() {
    let rows: &[(&str, &str, &str)] = &[
        // expression, after, next
        ("* * * * *", "2026-12-07T18:00:00Z", "2026-12-07T18:01:00Z"),
        ("* * * * *", "2026-12-07T18:00:59Z", "2026-12-07T18:01:00Z"),
        (
            "*/15 * * * *",
            "2026-12-07T18:14:59Z",
            "2026-12-07T18:15:00Z",
        ),
        (
            "*/15 * * * *",
            "2026-12-07T18:15:00Z",
            "2026-12-07T18:30:00Z",
        ),
        (
            "5/20 * * * *",
            "2026-12-07T18:46:00Z",
            "2026-12-07T19:05:00Z",
        ),
        ("@hourly", "2026-12-07T23:59:00Z", "2026-12-08T00:00:00Z"),
        ("@daily", "2026-12-31T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("@weekly", "2026-12-07T18:00:00Z", "2026-12-13T00:00:00Z"),
        ("@monthly", "2026-12-07T18:00:00Z", "2027-01-01T00:00:00Z"),
        ("@yearly", "2026-12-07T18:00:00Z", "2027-01-01T00:00:00Z"),
        // Month ends: the 31st skips the months without one.
        ("0 0 31 * *", "2027-01-31T00:00:00Z", "2027-03-31T00:00:00Z"),
        ("0 0 31 * *", "2027-05-31T00:00:00Z", "2027-07-31T00:00:00Z"),
        (
            "0 12 30 * *",
            "2027-01-30T12:00:00Z",
            "2027-03-30T12:00:00Z",
        ),
        // The 29th of February: the next leap year.
        ("0 0 29 2 *", "2026-12-07T00:00:00Z", "2028-02-29T00:00:00Z"),
        ("0 0 29 2 *", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00Z"),
        // Day of month OR day of week when both are restricted.
        ("0 0 13 * 5", "2026-12-07T00:00:00Z", "2026-12-11T00:00:00Z"),
        ("0 0 13 * 5", "2026-12-11T00:00:00Z", "2026-12-13T00:00:00Z"),
        // AND when one starts with `*`.
        (
            "0 0 */2 * 5",
            "2026-12-07T00:00:00Z",
            "2026-12-11T00:00:00Z",
        ),
        ("0 0 * * 7", "2026-12-07T00:00:00Z", "2026-12-13T00:00:00Z"),
        (
            "30 9-17/4 * * mon-fri",
            "2026-12-05T00:00:00Z",
            "2026-12-07T09:30:00Z",
        ),
        (
            "30 9-17/4 * * mon-fri",
            "2026-12-07T13:30:00Z",
            "2026-12-07T17:30:00Z",
        ),
        (
            "0 0 1 jan *",
            "2026-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
        // Mondays of February (the 30th never comes).
        ("0 0 30 2 1", "2026-12-07T00:00:00Z", "2027-02-01T00:00:00Z"),
    ];
    for (expr, after, want) in rows {
        assert_eq!(next(expr, "UTC", after), *want, "{expr} after {after}");
    }
}

#[test]
fn next_run_across_daylight_saving_time() {
    // Paris: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z);
    //        2026-10-25 03:00 CEST -> 02:00 CET (01:00Z).
    // New York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z);
    //           2026-11-01 02:00 EDT -> 01:00 EST (06:00Z).
    // Lord Howe: half an hour: 2026-10-04 02:00 -> 02:30 (+10:30 -> +11).
    let rows: &[(&str, &str, &str, &str)] = &[
        // A fixed time in the skipped hour runs when the clock jumps.
        (
            "30 2 * * *",
            "Europe/Paris",
            "2026-03-28T12:00:00Z",
            "2026-03-29T01:00:00Z",
        ),
        (
            "30 2 * * *",
            "Europe/Paris",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z",
        ),
        // Several skipped times make one run.
        (
            "*/15 2 * * *",
            "Europe/Paris",
            "2026-03-29T00:59:00Z",
            "2026-03-29T01:00:00Z",
        ),
        (
            "*/15 2 * * *",
            "Europe/Paris",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:00:00Z",
        ),
        // An `*` hour has no run in the hour that never was.
        (
            "30 * * * *",
            "Europe/Paris",
            "2026-03-29T00:00:00Z",
            "2026-03-29T00:30:00Z",
        ),
        (
            "30 * * * *",
            "Europe/Paris",
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:30:00Z",
        ),
        (
            "0 * * * *",
            "Europe/Paris",
            "2026-03-29T00:00:00Z",
            "2026-03-29T01:00:00Z",
        ),
        // Before and after the jump, ordinary days.
        (
            "0 3 * * *",
            "Europe/Paris",
            "2026-03-28T02:00:00Z",
            "2026-03-29T01:00:00Z",
        ),
        (
            "0 1 * * *",
            "Europe/Paris",
            "2026-03-28T02:00:00Z",
            "2026-03-29T00:00:00Z",
        ),
        // The repeated hour: an `*` hour runs in both passes.
        (
            "0 * * * *",
            "Europe/Paris",
            "2026-10-24T23:30:00Z",
            "2026-10-25T00:00:00Z",
        ),
        (
            "0 * * * *",
            "Europe/Paris",
            "2026-10-25T00:00:00Z",
            "2026-10-25T01:00:00Z",
        ),
        (
            "0 * * * *",
            "Europe/Paris",
            "2026-10-25T01:00:00Z",
            "2026-10-25T02:00:00Z",
        ),
        (
            "30 * * * *",
            "Europe/Paris",
            "2026-10-25T00:45:00Z",
            "2026-10-25T01:30:00Z",
        ),
        // A fixed time in it runs once, in the first pass.
        (
            "30 2 * * *",
            "Europe/Paris",
            "2026-10-24T12:00:00Z",
            "2026-10-25T00:30:00Z",
        ),
        (
            "30 2 * * *",
            "Europe/Paris",
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z",
        ),
        (
            "30 2 * * *",
            "Europe/Paris",
            "2026-10-25T01:10:00Z",
            "2026-10-26T01:30:00Z",
        ),
        // Daily at midnight keeps to the wall clock across the change.
        (
            "@daily",
            "Europe/Paris",
            "2026-03-28T23:00:00Z",
            "2026-03-29T22:00:00Z",
        ),
        (
            "@daily",
            "Europe/Paris",
            "2026-10-24T22:00:00Z",
            "2026-10-25T23:00:00Z",
        ),
        // New York, by name and as a POSIX TZ string.
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-08T00:00:00Z",
            "2026-03-08T07:00:00Z",
        ),
        (
            "30 2 * * *",
            "EST5EDT,M3.2.0,M11.1.0",
            "2026-03-08T00:00:00Z",
            "2026-03-08T07:00:00Z",
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T00:00:00Z",
            "2026-11-01T05:30:00Z",
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T05:30:00Z",
            "2026-11-02T06:30:00Z",
        ),
        (
            "30 * * * *",
            "EST5EDT,M3.2.0,M11.1.0",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z",
        ),
        // Half an hour's change.
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T12:00:00Z",
            "2026-10-03T15:30:00Z",
        ),
        (
            "45 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T12:00:00Z",
            "2026-10-03T15:45:00Z",
        ),
        // A month end in a zone east of UTC: the 31st, local.
        (
            "0 0 31 * *",
            "Asia/Tokyo",
            "2027-01-30T15:00:00Z",
            "2027-03-30T15:00:00Z",
        ),
        (
            "0 0 31 * *",
            ":Asia/Tokyo",
            "2027-01-30T15:00:00Z",
            "2027-03-30T15:00:00Z",
        ),
    ];
    for (expr, tz, after, want) in rows {
        assert_eq!(next(expr, tz, after), *want, "{expr} in {tz} after {after}");
    }
}

/// What the scan of every minute finds, for UTC: the reference the
/// calculator must agree with on many expressions and instants.
#[test]
fn agrees_with_a_minute_by_minute_scan_in_utc() {
    let exprs = [
        "* * * * *",
        "7 * * * *",
        "*/7 */5 * * *",
        "0 0 1,15 * *",
        "0 12 * * 1-5",
        "15 3 31 * *",
        "0 0 29 2 *",
        "30 6 13 * 5",
        "0 0 * 2 sun",
        "59 23 28-31 * *",
    ];
    let tz = TimeZone::UTC;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for expr in exprs {
        let cron = Cron::parse(expr).expect(expr);
        for _ in 0..20 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // 2020..2040.
            let after = 1_577_836_800 + (rng % (20 * 365 * 86_400)) as i64;
            let got = cron.next_after(&tz, after).expect("a run");
            let mut t = after - after.rem_euclid(60) + 60;
            while !matches(&cron, t) {
                t += 60;
            }
            assert_eq!(rfc3339(got), rfc3339(t), "{expr} after {}", rfc3339(after));
        }
    }
}

fn matches(c: &Cron, t: i64) -> bool {
    let x = Civil::from_secs(t);
    c.months & (1 << x.mo) != 0
        && c.day_ok(x.y, x.mo, x.d)
        && c.hours & (1 << x.h) != 0
        && c.minutes & (1 << x.mi) != 0
}

#[test]
fn time_zones_by_name_posix_string_or_none() {
    assert_eq!(zone(None), Ok(TimeZone::UTC));
    assert_eq!(zone(Some("")), Ok(TimeZone::UTC));
    assert_eq!(zone(Some("UTC")), Ok(TimeZone::UTC));
    assert!(zone(Some("Europe/Paris")).is_ok());
    assert!(zone(Some("CET-1CEST,M3.5.0,M10.5.0/3")).is_ok());
    let e = zone(Some("Mars/Olympus_Mons")).expect_err("no such zone");
    assert!(e.contains("TZ=Mars/Olympus_Mons: no such time zone"), "{e}");
    assert!(e.contains("install tzdata"), "{e}");
}

#[test]
fn civil_arithmetic_round_trips() {
    for (s, want) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (4_107_542_399, "2100-02-28T23:59:59Z"),
        (-1, "1969-12-31T23:59:59Z"),
    ] {
        assert_eq!(rfc3339(s), want);
        assert_eq!(at(want), s);
    }
    assert_eq!(weekday(2026, 12, 7), 1, "a Monday");
    assert_eq!(weekday(2000, 1, 1), 6, "a Saturday");
}
