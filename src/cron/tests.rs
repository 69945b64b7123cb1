use super::civil::days_from_civil;
use super::*;

/// `2026-03-29T01:00:00Z` → seconds since the epoch.
fn at(s: &str) -> i64 {
    // YYYY-MM-DDTHH:MM:SSZ
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().expect(s);
    days_from_civil(n(0..4), n(5..7) as u32, n(8..10) as u32) * 86_400
        + n(11..13) * 3600
        + n(14..16) * 60
        + n(17..19)
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
        // The southern hemisphere: spring in October.
        (
            "30 2 * * *",
            "Australia/Sydney",
            "2026-10-03T12:00:00Z",
            "2026-10-03T16:00:00Z",
        ),
        (
            "30 2 * * *",
            "Australia/Sydney",
            "2026-04-04T12:00:00Z",
            "2026-04-04T15:30:00Z",
        ),
        (
            "30 2 * * *",
            "Australia/Sydney",
            "2026-04-04T15:30:00Z",
            "2026-04-05T16:30:00Z",
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
    let tz = Zone::utc();
    let mut next = crate::units::xorshift(0x2545_f491_4f6c_dd1d);
    for expr in exprs {
        let cron = Cron::parse(expr).expect(expr);
        for _ in 0..20 {
            // 2020..2040.
            let after = 1_577_836_800 + (next() % (20 * 365 * 86_400)) as i64;
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
    assert_eq!(zone(None), Ok(Zone::utc()));
    assert_eq!(zone(Some("")), Ok(Zone::utc()));
    assert_eq!(zone(Some("UTC")), Ok(Zone::utc()));
    assert!(zone(Some("Europe/Paris")).is_ok());
    assert!(zone(Some("CET-1CEST,M3.5.0,M10.5.0/3")).is_ok());
    // A TZif file by path is the same zone as its name.
    let by_path = zone(Some("/usr/share/zoneinfo/Europe/Paris")).expect("a TZif file");
    let paris = zone(Some("Europe/Paris")).expect("by name");
    let t = at("2026-07-01T12:00:00Z");
    assert_eq!(by_path.offset_at(t), 7200);
    assert_eq!(by_path.offset_at(t), paris.offset_at(t));
    let e = zone(Some("/nonexistent/zone")).expect_err("no file");
    assert!(e.starts_with("TZ=/nonexistent/zone: "), "{e}");
    let e = zone(Some("/dev/null")).expect_err("not a file");
    assert!(e.contains("not a regular file"), "{e}");
    let e = zone(Some("/etc/passwd")).expect_err("not TZif");
    assert!(e.contains("not a time zone file"), "{e}");
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

#[test]
fn offsets_by_name_and_by_posix_string_agree_across_the_changes() {
    // (zone, instant, offset east of UTC), each side of each change.
    let rows: &[(&str, &str, i32)] = &[
        ("Australia/Sydney", "2026-01-15T00:00:00Z", 39_600),
        ("Australia/Sydney", "2026-04-04T15:59:59Z", 39_600),
        ("Australia/Sydney", "2026-04-04T16:00:00Z", 36_000),
        ("Australia/Sydney", "2026-10-03T15:59:59Z", 36_000),
        ("Australia/Sydney", "2026-10-03T16:00:00Z", 39_600),
        (
            "AEST-10AEDT,M10.1.0,M4.1.0/3",
            "2026-04-04T15:59:59Z",
            39_600,
        ),
        (
            "AEST-10AEDT,M10.1.0,M4.1.0/3",
            "2026-04-04T16:00:00Z",
            36_000,
        ),
        (
            "AEST-10AEDT,M10.1.0,M4.1.0/3",
            "2026-10-03T16:00:00Z",
            39_600,
        ),
        ("Europe/Paris", "2026-03-29T00:59:59Z", 3600),
        ("Europe/Paris", "2026-03-29T01:00:00Z", 7200),
        ("Europe/Paris", "2026-10-25T00:59:59Z", 7200),
        ("Europe/Paris", "2026-10-25T01:00:00Z", 3600),
        // Far past the zoneinfo's last transition: its POSIX footer.
        ("Europe/Paris", "2091-07-01T00:00:00Z", 7200),
        ("Europe/Paris", "1900-01-01T00:00:00Z", 561),
        ("CET-1CEST,M3.5.0,M10.5.0/3", "2091-07-01T00:00:00Z", 7200),
        ("CET-1CEST,M3.5.0,M10.5.0/3", "2091-12-01T00:00:00Z", 3600),
        // Julian days (J60 is March 1 even in a leap year) and no DST.
        ("XXX0YYY,J60/0,J300/0", "2028-03-01T00:00:00Z", 3600),
        ("XXX0YYY,J60/0,J300/0", "2028-02-29T23:59:59Z", 0),
        ("<+0530>-5:30", "2026-12-07T00:00:00Z", 19_800),
        ("Asia/Kolkata", "2026-12-07T00:00:00Z", 19_800),
        ("EST5EDT", "2026-07-01T00:00:00Z", -14_400),
    ];
    for (tz, t, want) in rows {
        let z = zone(Some(tz)).expect(tz);
        assert_eq!(z.offset_at(at(t)), *want, "{tz} at {t}");
    }
    for bad in [
        "CET-1CEST,M3.5.0",
        "CE-1",
        "CET-1CEST,M13.1.0,M10.5.0",
        "CET-1CEST,J0,J10",
    ] {
        assert!(Zone::from_posix(bad).is_err(), "{bad}");
    }
}

/// Every file of the host's zoneinfo database reads, and its offsets are
/// within a day.
#[test]
fn every_zoneinfo_file_reads() {
    let mut n = 0;
    let mut dirs = vec![std::path::PathBuf::from("/usr/share/zoneinfo")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("zoneinfo").flatten() {
            let p = e.path();
            let ft = e.file_type().expect("type");
            if ft.is_dir() {
                dirs.push(p);
                continue;
            }
            if !ft.is_file() {
                continue; // links: the files they name are read once
            }
            let data = std::fs::read(&p).expect("read");
            if !data.starts_with(b"TZif") {
                continue;
            }
            let z = Zone::from_tzif("x", &data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            for t in [0, at("2026-01-01T00:00:00Z"), at("2090-07-01T00:00:00Z")] {
                assert!(z.offset_at(t).abs() < 86_400, "{}", p.display());
            }
            n += 1;
        }
    }
    assert!(n > 300, "only {n} zone files");
}
