//! The launcher's output (README "Logging and metrics"): JSON records
//! that any JSON parser reads, lines longer than `log.max_line` split into
//! records that join back byte for byte, per-service rate limits, and a
//! loop that stays responsive under a flood of output or a stalled reader.

mod common;
use common::*;
use std::collections::HashMap;

fn config(d: &TempDir, body: &str) -> String {
    let p = d.join("mc-launcher.yml");
    write(&p, body);
    p.to_string_lossy().into_owned()
}

fn records(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON record ({e}): {l:?}"))
        })
        .collect()
}

fn is_rfc3339_utc_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn json_records_parse_and_carry_their_fields() {
    let d = TempDir::new("log-json");
    let script = d.join("say.sh");
    write(
        &script,
        "printf 'plain\\n\"quoted\" back\\\\slash\\ttab\\001ctl\\n\\377bad\\n'\nprintf 'to stderr\\n' >&2\n",
    );
    let cfg = config(
        &d,
        &format!(
            "log: {{format: json}}\nservices:\n  web:\n    cmd: [\"sh\", \"{}\"]\n    stdout: prefix\n    stderr: prefix\n    respawn: false\n",
            script.display()
        ),
    );
    let out = Launch::new(&["-c", &cfg]).root(d.path()).run();
    assert_eq!(out.code, Some(0), "{}", out.all());
    let stdout = records(&out.stdout);
    let stderr = records(&out.stderr);
    for r in stdout.iter().chain(&stderr) {
        assert!(r["ts"].as_str().is_some_and(is_rfc3339_utc_millis), "{r}");
        assert!(r["msg"].is_string(), "{r}");
    }
    let msgs: Vec<&str> = stdout.iter().filter_map(|r| r["msg"].as_str()).collect();
    assert_eq!(
        msgs,
        [
            "plain",
            "\"quoted\" back\\slash\ttab\u{1}ctl",
            "\u{fffd}bad"
        ],
        "{}",
        out.stdout
    );
    assert!(stdout
        .iter()
        .all(|r| r["service"] == "web" && r["stream"] == "stdout" && r.get("level").is_none()));
    assert!(stderr
        .iter()
        .any(|r| r["service"] == "web" && r["stream"] == "stderr" && r["msg"] == "to stderr"));
    let own: Vec<_> = stderr
        .iter()
        .filter(|r| r["stream"] == "launcher")
        .collect();
    assert!(!own.is_empty(), "{}", out.stderr);
    for r in &own {
        assert_eq!(r["service"], "mc-launcher", "{r}");
        assert!(
            ["error", "warn", "info", "debug", "trace"]
                .contains(&r["level"].as_str().unwrap_or("")),
            "{r}"
        );
    }
    assert!(
        own.iter().any(|r| r["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("summary: web"))),
        "{}",
        out.stderr
    );
}

/// A line with every kind of character that escaping or UTF-8 cuts could
/// get wrong, `len` bytes long.
fn nasty_line(len: usize) -> String {
    let alphabet = [
        "a", "b", "\"", "\\", "\t", "é", "€", "😀", "\u{1}", "x", "y", "z", "/", " ",
    ];
    let mut s = String::with_capacity(len + 4);
    let mut i = 0usize;
    while s.len() < len {
        s.push_str(alphabet[(i * 7 + i / 13) % alphabet.len()]);
        i += 1;
    }
    s
}

/// Join the records of `name`'s stdout back into lines: JSON through
/// `partial_id`/`partial_last`, text through the `name+ | ` mark.
fn joined(stdout: &str, json: bool, name: &str) -> Vec<String> {
    let mut lines = Vec::new();
    if json {
        let mut open: HashMap<u64, String> = HashMap::new();
        for r in records(stdout) {
            if r["service"] != name {
                continue;
            }
            let msg = r["msg"].as_str().expect("msg");
            match r["partial_id"].as_u64() {
                None => lines.push(msg.to_string()),
                Some(id) => {
                    open.entry(id).or_default().push_str(msg);
                    if r["partial_last"] == true {
                        lines.push(open.remove(&id).expect("open line"));
                    } else {
                        assert_eq!(r["partial_last"], false, "{r}");
                    }
                }
            }
        }
        assert!(open.is_empty(), "a split line never ended");
    } else {
        let (first, cont) = (format!("{name} | "), format!("{name}+ | "));
        for l in stdout.lines() {
            if let Some(rest) = l.strip_prefix(&cont) {
                lines.last_mut().expect("a first piece").push_str(rest);
            } else if let Some(rest) = l.strip_prefix(&first) {
                lines.push(rest.to_string());
            }
        }
    }
    lines
}

#[test]
fn long_lines_split_within_max_line_and_join_back_exactly() {
    for json in [false, true] {
        let d = TempDir::new(if json {
            "log-long-json"
        } else {
            "log-long-text"
        });
        let short = "short line";
        let l40 = nasty_line(40 * 1024);
        let l1m = nasty_line(1 << 20);
        let data = d.join("lines.txt");
        write(&data, &format!("{short}\n{l40}\n{l1m}\n{short}\n"));
        let cfg = config(
            &d,
            &format!(
                "log: {{format: {}}}\nservices:\n  web:\n    cmd: [\"cat\", \"{}\"]\n    stdout: prefix\n    respawn: false\n",
                if json { "json" } else { "text" },
                data.display()
            ),
        );
        let out = Launch::new(&["-c", &cfg]).root(d.path()).run();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let longest = out
            .stdout
            .split_inclusive('\n')
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest <= 16384, "json {json}: a record of {longest} bytes");
        let records = out.stdout.lines().count();
        let lines = joined(&out.stdout, json, "web");
        assert_eq!(lines.len(), 4, "json {json}");
        assert_eq!(lines[0], short);
        assert!(lines[1] == l40, "json {json}: the 40 KiB line differs");
        assert!(lines[2] == l1m, "json {json}: the 1 MiB line differs");
        assert_eq!(lines[3], short);
        eprintln!("json {json}: {records} records, the longest {longest} bytes");
    }
}

#[test]
fn the_launchers_own_long_lines_are_split_too() {
    let d = TempDir::new("log-own-long");
    let long = "n".repeat(3000);
    let cfg = config(
        &d,
        "log: {format: text, max_line: 1K}\nservices:\n  web:\n    cmd: [\"true\"]\n    respawn: false\n",
    );
    // A command that does not exist: the launcher's error names it whole.
    let out = Launch::new(&["-c", &cfg, "--", &long]).root(d.path()).run();
    assert!(
        out.stderr.split_inclusive('\n').all(|l| l.len() <= 1024),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("\nmc-launcher+: "), "{}", out.stderr);
}

#[test]
fn rate_limit_drops_and_says_how_many() {
    let d = TempDir::new("log-rate");
    let cfg = config(
        &d,
        "log:\n  rate_limit: {lines: 100, per: 1s}\nservices:\n  chatty:\n    cmd: [\"seq\", \"1\", \"10000\"]\n    stdout: prefix\n    respawn: false\n  calm:\n    cmd: [\"seq\", \"1\", \"50\"]\n    stdout: prefix\n    respawn: false\n",
    );
    let out = Launch::new(&["-c", &cfg]).root(d.path()).run();
    assert_eq!(out.code, Some(0), "{}", out.all());
    let shown = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("chatty | "))
        .count();
    let calm = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("calm | "))
        .count();
    let dropped: usize = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("mc-launcher: warning: chatty: "))
        .map(|l| {
            let (n, rest) = l.split_once(' ').expect("count");
            assert_eq!(rest, "lines dropped (rate limit 100/1s)", "{l}");
            n.parse::<usize>().expect("a number")
        })
        .sum();
    assert_eq!(calm, 50, "another service's budget is its own");
    assert!(
        (100..=300).contains(&shown),
        "{shown} shown\n{}",
        out.stderr
    );
    assert_eq!(shown + dropped, 10000, "{}", out.stderr);
}
