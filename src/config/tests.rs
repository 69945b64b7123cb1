use super::*;
use std::time::Duration;

use crate::fsutil::scratch::Tmp;

fn load_text(text: &str) -> Result<Loaded, Vec<Diag>> {
    let t = Tmp::new("load");
    let file = t.0.join("c.yml");
    std::fs::write(&file, text).expect("write");
    let opts = LoadOptions {
        config: Some(file),
        root: Some(t.0.clone()),
        project: Some("p".into()),
        ..Default::default()
    };
    load(&opts)
}

fn errors(text: &str) -> Vec<(usize, usize, String)> {
    match load_text(text) {
        Ok(_) => Vec::new(),
        Err(ds) => ds
            .into_iter()
            .map(|d| (d.pos.line, d.pos.col, d.msg))
            .collect(),
    }
}

#[test]
fn each_bad_input_names_its_line_and_column() {
    // (config, line, col, part of the message)
    let rows: &[(&str, usize, usize, &str)] = &[
        ("bogus: 1\n", 1, 1, "unknown key `bogus`"),
        (
            "services:\n  a:\n    cmd: x\n    colour: red\n",
            4,
            5,
            "unknown key `colour`",
        ),
        (
            "services:\n  a:\n    cmd: x\n    numprocesses: two\n",
            4,
            19,
            "expected an integer",
        ),
        (
            "services:\n  a:\n    cmd: x\n    numprocesses: 0\n",
            4,
            19,
            "below the minimum",
        ),
        (
            "services:\n  a:\n    cmd: x\n    graceful_timeout: 3 parsecs\n",
            4,
            23,
            "bad duration",
        ),
        // Found by fuzzing: durations that would overflow a deadline.
        (
            "services:\n  a:\n    cmd: x\n    graceful_timeout: 1.0e30\n",
            4,
            23,
            "at most 10 years",
        ),
        (
            "shutdown:\n  timeout: 99999999999999h\n",
            2,
            12,
            "longer than 10 years",
        ),
        (
            "services:\n  a:\n    cmd: x\n    stop_signal: SIGNOPE\n",
            4,
            18,
            "unknown signal",
        ),
        (
            "services:\n  a:\n    cmd: x\n    on_reconfigure: bounce\n",
            4,
            21,
            "expected restart, reload or none",
        ),
        (
            "services:\n  a:\n    cmd: x\n    reload_signal: NOPE\n",
            4,
            20,
            "unknown signal",
        ),
        ("reconfigure:\n  watch: sometimes\n", 2, 10, "expected"),
        (
            "reconfigure:\n  watch: true\n  debounce: 1s\n",
            3,
            3,
            "unknown key `debounce`",
        ),
        (
            "services:\n  a:\n    cmd: x\n    user: no-such-user-xyz\n",
            4,
            11,
            "no such user",
        ),
        (
            "services:\n  a:\n    cmd: x\n    after: [ghost]\n",
            2,
            3,
            "unknown service `ghost`",
        ),
        (
            "services:\n  a:\n    respawn: true\n",
            2,
            3,
            "`cmd` is required",
        ),
        ("services:\n  a:\n    cmd: []\n", 3, 10, "empty command"),
        (
            "services:\n  a:\n    cmd: \"unbalanced 'quote\"\n",
            3,
            10,
            "cannot split",
        ),
        (
            "services:\n  a:\n    cmd: x\n    respawn: maybe\n",
            4,
            14,
            "expected true or false",
        ),
        (
            "services:\n  a:\n    cmd: x\n    ready: {tcp: localhost}\n",
            4,
            18,
            "expected host:port",
        ),
        // One host:port parser (config::model::probe), for tcp and http.
        (
            "services:\n  a:\n    cmd: x\n    ready: {tcp: '::1:80'}\n",
            4,
            18,
            "IPv6 address goes in brackets",
        ),
        (
            "services:\n  a:\n    cmd: x\n    live: {tcp: 'h:0'}\n",
            4,
            17,
            "`0` is not a port",
        ),
        (
            "services:\n  a:\n    cmd: x\n    ready: {http: 'http://web:80x/'}\n",
            4,
            19,
            "`80x` is not a port",
        ),
        (
            "services:\n  a:\n    cmd: x\n    ready: {http: 'https://web/'}\n",
            4,
            19,
            "only http:// URLs",
        ),
        // notify is a readiness check only.
        (
            "services:\n  a:\n    cmd: x\n    live: {notify: true}\n",
            4,
            12,
            "unknown key `notify` (expected one of: tcp, http, cmd, file, period",
        ),
        (
            "services:\n  a:\n    cmd: x\n    live: {period: 1s}\n",
            4,
            11,
            "needs exactly one of tcp, http, cmd, file",
        ),
        (
            "services:\n  a:\n    cmd: x\n    ready: {notify: false}\n",
            4,
            12,
            "needs exactly one of tcp, http, cmd, file, notify: true",
        ),
        (
            "services:\n  a:\n    cmd: x\n    ready: {tcp: 'h:1', file: /x}\n",
            4,
            12,
            "exactly one of tcp, http, cmd, file",
        ),
        (
            "services:\n  a:\n    cmd: x\n    stdout: loud\n",
            4,
            13,
            "expected inherit, prefix",
        ),
        (
            "services:\n  a:\n    cmd: x\n    stdout: {file: /x, max_bytes: lots}\n",
            4,
            35,
            "bad size",
        ),
        (
            "services:\n  a:\n    cmd: x\n    rlimits: {files: 10}\n",
            4,
            15,
            "unknown limit `files`",
        ),
        // Numbers are checked before they are narrowed: uid 4294967296
        // would be 0 (root) in 32 bits.
        (
            "services:\n  a:\n    cmd: x\n    uid: 4294967296\n",
            4,
            10,
            "uid: 4294967296 is above the maximum, 4294967294",
        ),
        (
            "services:\n  a:\n    cmd: x\n    gid: 4294967295\n",
            4,
            10,
            "gid: 4294967295 is above the maximum",
        ),
        (
            "services:\n  a:\n    cmd: x\n    uid: -1\n",
            4,
            10,
            "below the minimum, 0",
        ),
        (
            "services:\n  a:\n    cmd: x\n    gid: 0x100000000\n",
            4,
            10,
            "above the maximum",
        ),
        (
            "services:\n  a:\n    cmd: x\n    user: \"4294967295\"\n",
            4,
            11,
            "no such user `4294967295`",
        ),
        (
            "prepopulate:\n  - {src: /a, dest: /b, owner: \"0:4294967296\"}\n",
            2,
            32,
            "no such group `4294967296`",
        ),
        (
            "services:\n  a:\n    cmd: x\n    numprocesses: 20000\n",
            4,
            19,
            "20000 is above the maximum, 10000",
        ),
        (
            "services:\n  a:\n    cmd: x\n    max_retry: 4294967296\n",
            4,
            16,
            "above the maximum, 4294967295",
        ),
        (
            "services:\n  a:\n    cmd: x\n    max_retry: -2\n",
            4,
            16,
            "below the minimum, -1",
        ),
        (
            "services:\n  a:\n    cmd: x\n    stdout: {file: /x, backup_count: 5000}\n",
            4,
            38,
            "5000 is above the maximum, 1000",
        ),
        (
            "services:\n  a:\n    cmd: x\n    rlimits: {nofile: -5}\n",
            4,
            23,
            "below the minimum",
        ),
        (
            "services:\n  a:\n    cmd: x\n    working_dir: relative/dir\n",
            4,
            18,
            "absolute path",
        ),
        (
            "services:\n  a:\n    cmd: x\n    cmd: y\n",
            4,
            5,
            "duplicate key `cmd`",
        ),
        ("services:\n  bad name:\n    cmd: x\n", 2, 3, "service name"),
        (
            "pillar:\n  on_invalid: explode\n",
            2,
            15,
            "abort, keep-default or last-good",
        ),
        ("ssh:\n  sshd: sometimes\n", 2, 9, "auto, never or always"),
        (
            "reconfigure:\n  steps:\n    - salt: [a]\n      command: [b]\n",
            3,
            7,
            "exactly one of salt, template, command",
        ),
        (
            "reconfigure:\n  steps:\n    - template: {src: /a}\n",
            3,
            17,
            "src and dest are required",
        ),
        (
            "reconfigure:\n  steps:\n    - template: {src: /a, dest: /b, mode: '9999'}\n",
            3,
            43,
            "bad file mode",
        ),
        (
            "reconfigure:\n  steps:\n    - command: [x]\n      config_dir: /etc/salt\n",
            3,
            7,
            "config_dir goes with salt",
        ),
        (
            "prepopulate:\n  - src: /a\n    dest: /b\n    owner: 'root:no-such-group-xyz'\n",
            4,
            12,
            "no such group",
        ),
        ("shutdown:\n  timeout: soon\n", 2, 12, "bad duration"),
        (
            "- just\n- a list\n",
            1,
            1,
            "expected a mapping at the top level",
        ),
        (
            "services: [1, 2\n",
            1,
            11,
            "unclosed '[' opened at line 1 col 11",
        ),
        (
            "services:\n  a:\n    cmd: {{ nope }}\n",
            3,
            0,
            "undefined variable",
        ),
        ("{% if %}\n", 1, 0, "template error"),
    ];
    assert_positions(rows);
}

/// Each (config, line, col, part of the message) row: loading `config`
/// reports an error at that line and column whose message holds `part`.
fn assert_positions(rows: &[(&str, usize, usize, &str)]) {
    for (text, line, col, part) in rows {
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|(l, c, m)| l == line && c == col && m.contains(part)),
            "{text:?}: want {line}:{col} `{part}`, got {errs:?}"
        );
    }
}

/// A config with `keys` (all null) at `section` of the reference
/// (`services.NAME.ready`, `reconfigure.steps[].template`), in flow style.
fn section_config(section: &str, keys: &[&str]) -> String {
    let mut text = format!(
        "{{ {} }}",
        keys.iter()
            .map(|k| format!("{k}: null"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for part in section.rsplit('.').filter(|p| !p.is_empty()) {
        let (name, list) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        let name = if name == "NAME" { "svc" } else { name };
        text = if list {
            format!("{{ {name}: [ {text} ] }}")
        } else {
            format!("{{ {name}: {text} }}")
        };
    }
    text
}

/// Every key of the decoder's tables (the reference, the schema) reaches
/// an arm of its section's match: a key in a table that no arm names is an
/// "unknown key" error, never silently another key.
#[test]
fn every_key_of_every_section_is_decoded() {
    assert_eq!(
        section_config("services.NAME.ready", &["tcp", "timeout"]),
        "{ services: { svc: { ready: { tcp: null, timeout: null } } } }"
    );
    for (section, keys) in decode::REFERENCE {
        let text = section_config(section, keys);
        let unknown: Vec<String> = errors(&text)
            .into_iter()
            .map(|e| e.2)
            .filter(|m| m.contains("unknown key"))
            .collect();
        assert!(unknown.is_empty(), "{text}: {unknown:?}");
    }
    // The test sees the errors it looks for.
    let text = section_config("services.NAME.ready", &["tcp", "tcpp"]);
    assert!(
        errors(&text)
            .iter()
            .any(|e| e.2.contains("unknown key `tcpp`")),
        "{text}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let errs = errors(
        "services:\n  a:\n    cmd: x\n    numprocesses: many\n  b:\n    cmd: y\n    stop_signal: NOPE\n    after: [zz]\nshutdown:\n  timeout: never\nextra: 1\n",
    );
    let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
    for want in [4, 7, 5, 10, 11] {
        assert!(lines.contains(&want), "line {want} missing from {errs:?}");
    }
}

#[test]
fn dependency_cycles_are_named() {
    let errs = errors("services:\n  a: {cmd: x, after: [c]}\n  b: {cmd: x, after: [a]}\n  c: {cmd: x, after: [b]}\n");
    assert!(
        errs.iter()
            .any(|e| e.2.contains("dependency cycle") && e.2.contains("a -> c -> b -> a")),
        "{errs:?}"
    );
    let errs = errors("services:\n  a: {cmd: x, after: [a]}\n");
    assert!(
        errs.iter()
            .any(|e| e.2.contains("cannot start after itself")),
        "{errs:?}"
    );
}

#[test]
fn a_full_config_decodes() {
    let loaded = load_text(
        r#"
project: myapp
shutdown: {timeout: 5s}
pillar:
  on_invalid: keep-default
ssh:
  user: root
  watch: false
  sshd: never
reconfigure:
  on_error: continue
  skip_unchanged: false
  steps:
    - salt: ["{{ project }}.200_reconfigure"]
      config_dir: /etc/salt
      timeout: 10m
    - template: {src: "{{ paths.project }}/.salt/files/app.conf.j2", dest: /etc/app.conf, mode: "0640", owner: "root:root"}
    - command: "bin/migrate --noinput"
      timeout: 5m
prepopulate:
  - src: "{{ paths.project }}/.salt/files/default-data"
    dest: "{{ paths.volume }}/data"
    owner: "nobody"
services:
  db:
    cmd: ["sleep", "100"]
    ready: {tcp: "127.0.0.1:5432", timeout: 10s, interval: 100ms}
  web:
    cmd: nginx -g 'daemon off;'
    numprocesses: 2
    working_dir: /tmp
    user: nobody
    env: {KEY: value, PORT: 8080}
    copy_env: false
    after: [db]
    priority: 3
    respawn: true
    max_retry: -1
    backoff: {initial: 200ms, max: 1m}
    min_uptime: 2s
    critical: true
    stop_signal: QUIT
    graceful_timeout: 20s
    stdout: prefix
    stderr: {file: /var/log/web.err, max_bytes: 10MB, backup_count: 3}
    rlimits: {nofile: 65536, core: unlimited}
    autostart: true
  sh:
    cmd: "echo $HOME && sleep 1"
    shell: true
    stdout: null
"#,
    )
    .expect("valid config");
    let c = &loaded.config;
    assert_eq!(
        c.project.as_deref(),
        Some("p"),
        "the command line's project wins over the file's"
    );
    assert_eq!(c.shutdown.timeout, Duration::from_secs(5));
    assert_eq!(c.pillar.on_invalid, OnInvalid::KeepDefault);
    assert_eq!(c.ssh.sshd, SshdMode::Never);
    assert!(!c.ssh.watch);
    assert_eq!(c.reconfigure.on_error, OnError::Continue);
    assert_eq!(c.reconfigure.steps.len(), 3);
    let names: Vec<&str> = c
        .reconfigure
        .steps
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["salt-1", "template-2", "command-3"]);
    match &c.reconfigure.steps[0].kind {
        StepKind::Salt { states, config_dir } => {
            assert_eq!(states, &["p.200_reconfigure".to_string()]);
            assert_eq!(config_dir.as_deref(), Some(Path::new("/etc/salt")));
        }
        other => panic!("{other:?}"),
    }
    match &c.reconfigure.steps[1].kind {
        StepKind::Template {
            src, mode, owner, ..
        } => {
            assert!(
                src.ends_with("projects/p/project/.salt/files/app.conf.j2"),
                "{src:?}"
            );
            assert_eq!(*mode, Some(0o640));
            assert_eq!(
                owner
                    .as_ref()
                    .map(|o| (o.user.as_str(), o.group.as_deref())),
                Some(("root", Some("root")))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.reconfigure.steps[2].timeout,
        Some(Duration::from_secs(300))
    );
    assert!(c.prepopulate[0].dest.ends_with("projects/p/data/data"));
    let web = c.services.iter().find(|s| s.name == "web").expect("web");
    assert_eq!(web.argv, ["nginx", "-g", "daemon off;"]);
    assert_eq!(web.numprocesses, 2);
    assert_eq!(web.env.get("PORT").map(String::as_str), Some("8080"));
    assert!(!web.copy_env && web.critical);
    assert_eq!(web.max_retry, None);
    assert_eq!(web.backoff.max, Duration::from_secs(60));
    assert_eq!(web.stop_signal, nix::sys::signal::Signal::SIGQUIT);
    assert_eq!(web.stdout, Stream::Prefix);
    match &web.stderr {
        Stream::File(f) => assert_eq!((f.max_bytes, f.backup_count), (10 << 20, 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(web.rlimits.len(), 2);
    assert_eq!(web.origin.pos.line, 28);
    let db = c.services.iter().find(|s| s.name == "db").expect("db");
    assert_eq!(
        db.ready.as_ref().map(|r| r.interval),
        Some(Duration::from_millis(100))
    );
    let sh = c.services.iter().find(|s| s.name == "sh").expect("sh");
    assert_eq!(sh.argv, ["/bin/sh", "-c", "echo $HOME && sleep 1"]);
    assert_eq!(sh.stdout, Stream::Null);
    let order: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["db", "web", "sh"], "file order");
}

#[test]
fn templating_sees_env_project_root_and_paths() {
    std::env::set_var("MCL_TEST_VALUE", "from-env");
    let loaded = load_text(
        "services:\n  a:\n    cmd: [\"echo\", \"{{ project }}\", \"{{ paths.volume }}\", \"{{ env.MCL_TEST_VALUE }}\"]\n{% if project == 'p' %}\n  b:\n    cmd: [\"true\"]\n{% endif %}\n",
    )
    .expect("valid");
    let a = &loaded.config.services[0];
    assert_eq!(a.argv[1], "p");
    assert!(a.argv[2].ends_with("/projects/p/data"), "{}", a.argv[2]);
    assert_eq!(a.argv[3], "from-env");
    assert_eq!(loaded.config.services.len(), 2);
    assert!(loaded
        .rendered
        .as_deref()
        .is_some_and(|r| r.contains("\"p\"")));
}

#[test]
fn paths_override_the_defaults_that_derive_from_them() {
    let loaded = load_text("paths:\n  volume: /data/vol\n  state: /tmp/st\n").expect("valid");
    let c = &loaded.config;
    assert_eq!(c.paths.volume, Path::new("/data/vol"));
    assert_eq!(
        c.pillar.source,
        Path::new("/data/vol/configuration/pillar.sls")
    );
    assert_eq!(c.ssh.keys_dirs[0], Path::new("/data/vol/ssh"));
    assert_eq!(c.paths.state, Path::new("/tmp/st"));
}

#[test]
fn project_discovery_and_search_order() {
    let t = Tmp::new("disc");
    std::fs::create_dir_all(t.0.join("projects/only/project/.salt")).expect("mkdir");
    assert_eq!(discover_project(&t.0).as_deref(), Some("only"));
    std::fs::write(
        t.0.join("projects/only/project/.salt/mc-launcher.yml"),
        "services:\n  s:\n    cmd: [x]\n",
    )
    .expect("write");
    let loaded = load(&LoadOptions {
        config: None,
        root: Some(t.0.clone()),
        project: None,
        ..Default::default()
    })
    .expect("found");
    assert_eq!(loaded.config.project.as_deref(), Some("only"));
    assert_eq!(
        loaded.config.file.as_deref(),
        Some(
            t.0.join("projects/only/project/.salt/mc-launcher.yml")
                .as_path()
        )
    );
    std::fs::create_dir_all(t.0.join("projects/second")).expect("mkdir");
    assert_eq!(discover_project(&t.0), None, "two projects: none is chosen");
    let missing = load(&LoadOptions {
        config: Some(t.0.join("nope.yml")),
        root: Some(t.0.clone()),
        project: None,
        ..Default::default()
    });
    let errs = missing.expect_err("a named config must exist");
    assert!(
        errs[0].to_string().contains("nope.yml: cannot read config"),
        "{}",
        errs[0]
    );
}

#[test]
fn the_files_own_project_is_used_when_the_command_line_is_silent() {
    let t = Tmp::new("own");
    let file = t.0.join("c.yml");
    std::fs::write(
        &file,
        "project: mine\nservices:\n  s:\n    cmd: [\"{{ project }}\"]\n",
    )
    .expect("write");
    let l = load(&LoadOptions {
        config: Some(file),
        root: Some(t.0.clone()),
        project: None,
        ..Default::default()
    })
    .expect("valid");
    assert_eq!(l.config.project.as_deref(), Some("mine"));
    assert_eq!(l.config.services[0].argv, ["mine"]);
    assert!(l.config.paths.volume.ends_with("projects/mine/data"));
}

/// The config is rendered then parsed: both budgets apply (issue 15, item
/// 22), and the file itself has a size limit.
#[test]
fn budgets_apply_to_the_config() {
    let mut rows = crate::template::tests::budget_attacks("project: p");
    let big = format!("project: p\n#{}\n", "x".repeat(1 << 20));
    rows.push(("too big", big, 0, "larger than the limit of 1 MiB"));
    crate::template::tests::assert_refusals("c.yml", &rows, |text| {
        load_text(text).map_err(|errs| errs.into_iter().next().expect("an error"))
    });
}

#[test]
fn live_reconfigure_keys_decode() {
    use crate::config::model::OnReconfigure;
    use nix::sys::signal::Signal;
    let l = load_text(
        "reconfigure:\n  watch: true\nservices:\n  a:\n    cmd: x\n    on_reconfigure: reload\n    reload_signal: USR2\n  b:\n    cmd: y\n    on_reconfigure: none\n  c:\n    cmd: z\n",
    )
    .expect("valid");
    assert!(l.config.reconfigure.watch);
    let rows = [
        ("a", OnReconfigure::Reload, Signal::SIGUSR2),
        ("b", OnReconfigure::None, Signal::SIGHUP),
        ("c", OnReconfigure::Restart, Signal::SIGHUP),
    ];
    for (name, on, sig) in rows {
        let s = l
            .config
            .services
            .iter()
            .find(|s| s.name == name)
            .expect("service");
        assert_eq!((s.on_reconfigure, s.reload_signal), (on, sig), "{name}");
    }
    let plain = load_text("services:\n  a:\n    cmd: x\n").expect("valid");
    assert!(!plain.config.reconfigure.watch, "watch is off by default");
}

#[test]
fn log_and_metrics_decode() {
    use crate::config::model::{LogFormat, RateLimit};
    // (config, format, max_line, rate_limit as (lines, ms), listen)
    type Row<'a> = (
        &'a str,
        LogFormat,
        usize,
        Option<(u64, u64)>,
        Option<&'a str>,
    );
    let rows: &[Row] = &[
        ("{}\n", LogFormat::Text, 16384, None, None),
        ("log: {format: json}\n", LogFormat::Json, 16384, None, None),
        (
            "log: {format: text, max_line: 4K}\n",
            LogFormat::Text,
            4096,
            None,
            None,
        ),
        (
            "log:\n  rate_limit: {lines: 100, per: 1s}\n",
            LogFormat::Text,
            16384,
            Some((100, 1000)),
            None,
        ),
        (
            "log: {rate_limit: null}\n",
            LogFormat::Text,
            16384,
            None,
            None,
        ),
        (
            "metrics: {listen: \"127.0.0.1:9300\"}\n",
            LogFormat::Text,
            16384,
            None,
            Some("127.0.0.1:9300"),
        ),
        (
            "metrics: {listen: \":9300\"}\n",
            LogFormat::Text,
            16384,
            None,
            Some("0.0.0.0:9300"),
        ),
        (
            "metrics: {listen: null}\n",
            LogFormat::Text,
            16384,
            None,
            None,
        ),
    ];
    for (text, format, max_line, rate, listen) in rows {
        let cfg = load_text(text)
            .unwrap_or_else(|e| panic!("{text}: {e:?}"))
            .config;
        assert_eq!(cfg.log.format, *format, "{text}");
        assert_eq!(cfg.log.max_line, *max_line, "{text}");
        let want = rate.map(|(lines, ms)| RateLimit {
            lines,
            per: Duration::from_millis(ms),
        });
        assert_eq!(cfg.log.rate_limit, want, "{text}");
        assert_eq!(
            cfg.metrics.listen.map(|a| a.to_string()).as_deref(),
            *listen,
            "{text}"
        );
    }
}

#[test]
fn a_service_may_have_its_own_rate_limit_or_none() {
    use crate::config::model::RateLimit;
    let cfg = load_text(
        "log:\n  rate_limit: {lines: 100, per: 1s}\nservices:\n  a: {cmd: x}\n  b: {cmd: x, log_rate_limit: null}\n  c: {cmd: x, log_rate_limit: {lines: 5, per: 2s}}\n",
    )
    .expect("valid")
    .config;
    let own: Vec<_> = cfg.services.iter().map(|s| s.log_rate_limit).collect();
    assert_eq!(
        own,
        vec![
            None,
            Some(None),
            Some(Some(RateLimit {
                lines: 5,
                per: Duration::from_secs(2)
            }))
        ]
    );
}

#[test]
fn log_buffer_decodes_sizes_and_refuses_too_big() {
    // (config, Ok(bytes) or Err(part of the error))
    let rows: &[(&str, Result<usize, &str>)] = &[
        ("{}\n", Ok(64 * 1024)),
        ("log: {buffer: 0}\n", Ok(0)),
        ("log: {buffer: 1M}\n", Ok(1 << 20)),
        ("log: {buffer: 64M}\n", Ok(64 << 20)),
        (
            "log: {buffer: 65M}\n",
            Err("log.buffer: 68157440 bytes is over"),
        ),
        ("log: {buffer: lots}\n", Err("bad size")),
    ];
    for (text, want) in rows {
        match (load_text(text), want) {
            (Ok(l), Ok(bytes)) => assert_eq!(l.config.log.buffer, *bytes, "{text}"),
            (Err(e), Err(part)) => {
                let all = e
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
                assert!(all.contains(part), "{text}: {all}");
            }
            (got, _) => panic!("{text}: {:?}", got.map(|l| l.config.log.buffer)),
        }
    }
}

#[test]
fn bad_log_and_metrics_keys_name_their_position() {
    let rows: &[(&str, usize, usize, &str)] = &[
        ("log: {colour: red}\n", 1, 7, "unknown key `colour`"),
        ("log: {format: xml}\n", 1, 15, "`xml` is not text or json"),
        ("log: {max_line: 10}\n", 1, 17, "outside 1024..1048576"),
        ("log: {max_line: 2G}\n", 1, 17, "outside"),
        ("log: {max_line: lots}\n", 1, 17, "bad size"),
        (
            "log:\n  rate_limit: {lines: 0, per: 1s}\n",
            2,
            23,
            "below the minimum",
        ),
        (
            "log:\n  rate_limit: {lines: 5, per: 0s}\n",
            2,
            31,
            "longer than 0s",
        ),
        (
            "log:\n  rate_limit: {lines: 5}\n",
            2,
            15,
            "needs both `lines` and `per`",
        ),
        (
            "log:\n  rate_limit: {lines: 5, per: 1s, burst: 2}\n",
            2,
            35,
            "unknown key `burst`",
        ),
        (
            "metrics: {listen: \"localhost\"}\n",
            1,
            19,
            "not ADDRESS:PORT",
        ),
        ("metrics: {port: 9300}\n", 1, 11, "unknown key `port`"),
        (
            "services:\n  a:\n    cmd: x\n    log_rate_limit: {lines: 5}\n",
            4,
            21,
            "a.log_rate_limit: needs both",
        ),
    ];
    assert_positions(rows);
}

#[test]
fn every_prepare_step_is_in_all_once_and_named() {
    // The enum as written in model.rs: a variant missing from ALL would
    // never run, plan or check.
    let src = include_str!("model.rs");
    let body = src
        .split("pub enum PrepareStep {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("the enum in model.rs");
    let variants: Vec<&str> = body
        .lines()
        .map(|l| l.trim().trim_end_matches(','))
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with('#'))
        .collect();
    assert_eq!(variants.len(), PrepareStep::ALL.len(), "{variants:?}");
    for (n, step) in PrepareStep::ALL.iter().enumerate() {
        assert!(!PrepareStep::ALL[..n].contains(step), "{step:?} twice");
        assert_eq!(PrepareStep::parse(step.name()), Some(*step));
        assert_eq!(
            PrepareStep::parse(&format!(" {} ", step.name())),
            Some(*step)
        );
    }
    assert_eq!(PrepareStep::parse("nothing"), None);
}
