use super::*;
use std::time::Duration;

use crate::fsutil::scratch::Tmp;

fn tmp(tag: &str) -> Tmp {
    Tmp::new(&format!("circus-{tag}"))
}
/// Load `main` of a tree of `files` (path, text) written first.
fn load_tree(tag: &str, files: &[(&str, &str)], main: &str) -> (CircusLoad, Tmp) {
    let t = tmp(tag);
    for (rel, text) in files {
        t.write(rel, text);
    }
    let cfg = CircusCfg {
        config: Some(t.join(main)),
        include: vec![],
    };
    (load(&cfg, &env()), t)
}
fn env() -> BTreeMap<String, String> {
    [("HOME", "/home/op"), ("PATH", "/usr/bin:/bin")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
fn load_one(text: &str) -> (CircusLoad, PathBuf, Tmp) {
    let (l, t) = load_tree("one", &[("w.ini", text)], "w.ini");
    let f = t.join("w.ini");
    (l, f, t)
}

#[test]
fn the_makina_fixture_tree_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/circus");
    let cfg = CircusCfg {
        config: Some(dir.join("circusd.ini")),
        include: vec![],
    };
    let l = load(&cfg, &env());
    assert!(l.errors.is_empty(), "{:?}", l.errors);
    assert!(l.unsupported.is_empty(), "{:?}", l.unsupported);
    let names: Vec<&str> = l.services.iter().map(|s| s.name.as_str()).collect();
    // Files are read in sorted (byte) order: 100_… before 11_… before 50_….
    assert_eq!(names, ["myapp-web", "ssh", "redis"], "sorted include order");
    let find = |n: &str| l.services.iter().find(|s| s.name == n).expect("service");
    let ssh = find("ssh");
    assert_eq!(ssh.argv, ["/bin/sleep", "1011"]);
    assert_eq!(ssh.stop_signal, nix::sys::signal::Signal::SIGINT);
    assert_eq!(ssh.user.as_deref(), Some("root"));
    assert_eq!(ssh.priority, 65524);
    assert_eq!(
        ssh.max_age.map(|m| m.0),
        Some(Duration::from_secs(2_678_400))
    );
    assert!(ssh.copy_env);
    let redis = find("redis");
    assert_eq!(redis.argv, ["/bin/sleep", "1050"]);
    assert_eq!(redis.rlimits.len(), 1);
    assert_eq!(redis.graceful_timeout, Duration::from_secs(5));
    let web = find("myapp-web");
    assert_eq!(web.numprocesses, 2);
    assert_eq!(web.argv[0], "/bin/sh");
    assert_eq!(
        web.env.get("APP_ENV").map(String::as_str),
        Some("production")
    );
    assert_eq!(
        web.env.get("APP_HOME").map(String::as_str),
        Some("/home/op/app")
    );
    match &web.stdout {
        Stream::File(f) => {
            assert_eq!(f.path, Path::new("/var/log/circus/myapp-web.stdout.log"));
            assert_eq!(
                (f.max_bytes, f.backup_count, f.watched),
                (10_485_760, 5, false)
            );
            assert_eq!(f.time_format.as_deref(), Some("%Y-%m-%d %H:%M:%S"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&web.stderr, Stream::File(f) if f.watched));
    assert_eq!(web.origin.pos.line, 1);
}

#[test]
fn first_value_wins_and_sections_merge_across_files() {
    let (l, _t) = load_tree(
        "merge",
        &[
            (
                "main.ini",
                "[circus]\ninclude_dir = d\n[watcher:a]\ncmd = /bin/true\npriority = 1\npriority = 2\n",
            ),
            ("d/1.ini", "[watcher:a]\npriority = 3\nnumprocesses = 4\n"),
        ],
        "main.ini",
    );
    assert!(
        l.errors.is_empty() && l.unsupported.is_empty(),
        "{:?} {:?}",
        l.errors,
        l.unsupported
    );
    assert_eq!(l.services.len(), 1);
    assert_eq!(
        l.services[0].priority, 1,
        "the first value wins, within and across files"
    );
    assert_eq!(l.services[0].numprocesses, 4, "repeated sections merge");
}

#[test]
fn makinas_own_watcher_keys() {
    use crate::config::OnReconfigure;
    use nix::sys::signal::Signal;
    // (options, on_reconfigure, reload_signal)
    let cases: &[(&str, OnReconfigure, Signal)] = &[
        ("", OnReconfigure::Restart, Signal::SIGHUP),
        ("send_hup = True\n", OnReconfigure::Reload, Signal::SIGHUP),
        ("send_hup = true\n", OnReconfigure::Reload, Signal::SIGHUP),
        ("send_hup = False\n", OnReconfigure::Restart, Signal::SIGHUP),
        (
            "send_hup = True\nhup_signal = USR2\n",
            OnReconfigure::Reload,
            Signal::SIGUSR2,
        ),
        (
            "hup_signal = SIGUSR1\nsend_hup = True\n",
            OnReconfigure::Reload,
            Signal::SIGUSR1,
        ),
        (
            "environment = {}\nconf_priority = 60\ndefaultlog = True\n",
            OnReconfigure::Restart,
            Signal::SIGHUP,
        ),
        (
            "environment = {'A': 'b'}\n",
            OnReconfigure::Restart,
            Signal::SIGHUP,
        ),
    ];
    for (opts, on, sig) in cases {
        let (l, _f, _t) = load_one(&format!("[watcher:w]\ncmd = /bin/true\n{opts}"));
        assert!(
            l.errors.is_empty() && l.unsupported.is_empty(),
            "{opts:?}: {:?} {:?}",
            l.errors,
            l.unsupported
        );
        assert_eq!(l.services[0].on_reconfigure, *on, "{opts:?}");
        assert_eq!(l.services[0].reload_signal, *sig, "{opts:?}");
    }
    let (l, _f, _t) =
        load_one("[watcher:w]\ncmd = /bin/true\nhup_signal = NOPE\nsend_hup = maybe\n");
    assert_eq!(l.errors.len(), 2, "{:?}", l.errors);
}

#[test]
fn unsupported_and_bad_values_name_their_line() {
    let (l, f, _t) = load_one(
        "[circus]\nendpoint = tcp://x\nfancy = 1\n[watcher:w]\ncmd = /bin/true\nhooks.before_start = my.hook\nnumprocesses = many\nstop_signal = NOPE\nuse_sockets = True\n[socket:web]\nhost = 0.0.0.0\n[plugin:statsd]\nuse = x\n",
    );
    let at = |diags: &[Diag], line: usize, part: &str| {
        diags
            .iter()
            .any(|d| d.file == f && d.pos.line == line && d.msg.contains(part))
    };
    for (line, part) in [
        (3, "[circus] option `fancy`"),
        (6, "`hooks.before_start` is not supported"),
        (9, "`use_sockets`"),
        (10, "section [socket:web]"),
        (12, "section [plugin:statsd]"),
    ] {
        assert!(
            at(&l.unsupported, line, part),
            "{line}: {:?}",
            l.unsupported
        );
    }
    assert!(at(&l.errors, 7, "not an integer"), "{:?}", l.errors);
    assert!(at(&l.errors, 8, "unknown signal"), "{:?}", l.errors);
    assert_eq!(l.services.len(), 1, "the watcher itself still loads");
}

#[test]
fn options_map_to_services() {
    type Check = fn(&Service) -> bool;
    let rows: &[(&str, Check)] = &[
        ("cmd = /bin/echo\nargs = a 'b c'\n", |s| {
            s.argv == ["/bin/echo", "a", "b c"]
        }),
        ("cmd = echo hi\nshell = True\n", |s| {
            s.argv == ["/bin/sh", "-c", "echo hi"]
        }),
        ("cmd = x\ncopy_env = true\n", |s| s.copy_env),
        ("cmd = x\n", |s| !s.copy_env && s.stdout == Stream::Inherit),
        ("cmd = x\ncopy_path = True\n", |s| {
            s.env.get("PATH").map(String::as_str) == Some("/usr/bin:/bin")
        }),
        ("cmd = x\nmax_retry = -1\n", |s| s.max_retry.is_none()),
        ("cmd = x\nrespawn = False\nautostart = 0\n", |s| {
            !s.respawn && !s.autostart
        }),
        ("cmd = x\nuid = 1234\ngid = 0\n", |s| {
            s.uid == Some(1234) && s.gid == Some(0)
        }),
        ("cmd = x\nwarmup_delay = 0.5\n", |s| {
            s.warmup_delay == Duration::from_millis(500)
        }),
        ("cmd = x\nmax_age = 10\nmax_age_variance = 2\n", |s| {
            s.max_age == Some((Duration::from_secs(10), Duration::from_secs(2)))
        }),
        ("cmd = x\nstop_signal = SIGQUIT\n", |s| {
            s.stop_signal == nix::sys::signal::Signal::SIGQUIT
        }),
        ("cmd = x\nstop_signal = 2\n", |s| {
            s.stop_signal == nix::sys::signal::Signal::SIGINT
        }),
        ("cmd = x $(CIRCUS.ENV.HOME)\n", |s| {
            s.argv == ["x", "/home/op"]
        }),
        ("cmd = x\nargs = --long\n  --continued\n", |s| {
            s.argv == ["x", "--long", "--continued"]
        }),
        ("cmd = x ;inline comment\n", |s| s.argv == ["x"]),
        ("cmd = x\nstdout_stream.class = StdoutStream\n", |s| {
            s.stdout == Stream::Inherit
        }),
    ];
    for (body, check) in rows {
        let (l, _, _t) = load_one(&format!("[watcher:w]\n{body}"));
        assert!(
            l.errors.is_empty() && l.unsupported.is_empty(),
            "{body:?}: {:?} {:?}",
            l.errors,
            l.unsupported
        );
        let s = l
            .services
            .first()
            .unwrap_or_else(|| panic!("{body:?}: no service"));
        assert!(check(s), "{body:?}: {s:?}");
    }
}

#[test]
fn env_sections_apply_by_pattern() {
    let (l, _, _t) = load_one("[env]\nALL = 1\n[env:web*,api]\nWEB = yes\n[watcher:web1]\ncmd = x\n[watcher:api]\ncmd = x\n[watcher:worker]\ncmd = x\n");
    let get = |n: &str| {
        l.services
            .iter()
            .find(|s| s.name == n)
            .map(|s| s.env.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("web1").get("WEB").map(String::as_str), Some("yes"));
    assert_eq!(get("api").get("WEB").map(String::as_str), Some("yes"));
    assert_eq!(get("worker").get("WEB"), None);
    assert_eq!(get("worker").get("ALL").map(String::as_str), Some("1"));
}

#[test]
fn include_loops_and_missing_files() {
    let (l, t) = load_tree(
        "loop",
        &[
            ("a.ini", "[circus]\ninclude = b.ini\n[watcher:a]\ncmd = x\n"),
            ("b.ini", "[circus]\ninclude = a.ini\n[watcher:b]\ncmd = y\n"),
        ],
        "a.ini",
    );
    assert_eq!(l.services.len(), 2);
    let l = load(
        &CircusCfg {
            config: Some(t.0.join("missing.ini")),
            include: vec![format!("{}/none-*.ini", t.0.display())],
        },
        &env(),
    );
    assert_eq!(l.errors.len(), 1, "{:?}", l.errors);
    assert!(
        l.errors[0].to_string().contains("missing.ini: cannot read"),
        "{}",
        l.errors[0]
    );
}

/// Found by fuzzing (fuzz/artifacts/circus_ini): a number of seconds too
/// large for a Duration panicked; it is now an error on its line.
#[test]
fn huge_durations_are_errors_not_panics() {
    for key in ["graceful_timeout", "warmup_delay", "max_age"] {
        let text = format!("[watcher:w]\ncmd = /bin/sh\n{key} = 388888888888888888888888888888888888888888888888\n");
        let (l, f, _t) = load_one(&text);
        assert!(
            l.errors.iter().any(|d| d.file == f
                && d.pos.line == 3
                && d.msg.contains("not a number of seconds")),
            "{key}: {:?}",
            l.errors
        );
    }
}

/// Numbers are checked before they are narrowed (issue 15, item 18): uid
/// 4294967296 would be 0 (root) in 32 bits, and 4294967295 is `(uid_t)-1`.
#[test]
fn numbers_out_of_range_are_errors() {
    let rows: &[(&str, &str)] = &[
        ("uid = 4294967296\n", "uid: 4294967296 is out of range (0 to 4294967294)"),
        ("uid = 4294967295\n", "out of range"),
        ("gid = -1\n", "gid: -1 is out of range"),
        ("gid = 99999999999999999999999\n", "not an integer"),
        ("numprocesses = 20000\n", "numprocesses: 20000 is out of range (0 to 10000)"),
        ("numprocesses = -3\n", "out of range"),
        ("max_retry = 4294967296\n", "max_retry: 4294967296 is out of range (-1 to 4294967295)"),
        ("max_retry = -2\n", "out of range"),
        ("stdout_stream.class = FileStream\nstdout_stream.filename = /x\nstdout_stream.backup_count = 5000\n", "backup_count: 5000 is out of range (0 to 1000)"),
    ];
    for (body, part) in rows {
        let (l, f, _t) = load_one(&format!("[watcher:w]\ncmd = x\n{body}"));
        assert!(
            l.errors
                .iter()
                .any(|d| d.file == f && d.pos.line >= 3 && d.msg.contains(part)),
            "{body:?}: {:?}",
            l.errors
        );
        assert!(
            l.services
                .iter()
                .all(|s| s.uid != Some(0) && s.gid != Some(0)),
            "{body:?}: never root"
        );
    }
}
