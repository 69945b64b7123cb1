//! Hostile inputs, round two (issue 26): a process of another service, a
//! scraper on the pod network, a stalled outer supervisor or whoever writes
//! the volume tries the newer paths. Each test plays one attack against the
//! real binary as PID 1 and is named after the issue item it proves.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// A directory anyone may write (a service user's scratch place).
fn open_dir(d: &TempDir, name: &str) -> std::path::PathBuf {
    let p = d.join(name);
    std::fs::create_dir_all(&p).expect("mkdir");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    p
}

fn config(d: &TempDir, body: &str) -> String {
    let cfg = d.join("mc-launcher.yml");
    write(&cfg, body);
    cfg.to_string_lossy().into_owned()
}

fn wait_file(p: &Path) -> String {
    assert!(
        wait_until(Duration::from_secs(15), || std::fs::read_to_string(p)
            .is_ok_and(|s| s.ends_with('\n'))),
        "{} never written",
        p.display()
    );
    std::fs::read_to_string(p).expect("read")
}

#[test]
fn item02_probes_run_as_the_service() {
    let d = TempDir::new("h2-probe-user");
    let work = open_dir(&d, "work");
    // What a process sees of itself: uid, gid, groups, cwd, one variable
    // of the service and one of the launcher's only, its open-files limit.
    let me = "echo $(id -u) $(id -g) $(id -G) $(pwd) ${PROBE_MARK:-none} ${LAUNCHER_ONLY:-none} $(ulimit -n)";
    let yml = format!(
            "services:\n  web:\n    cmd: [sh, -c, \"{me} > {w}/service.out; exec sleep 1000\"]\n    user: nobody\n    copy_env: false\n    working_dir: {w}\n    env: {{PROBE_MARK: svc}}\n    rlimits: {{nofile: 123}}\n    ready:\n      cmd: [sh, -c, \"{me} > {w}/ready.out\"]\n    live:\n      cmd: [sh, -c, \"{me} > {w}/live.out\"]\n      period: 200ms\n",
            w = work.display()
        );
    let run = launch_in(&d, &yml, &[])
        .env("LAUNCHER_ONLY", "leaked")
        .spawn();
    let service = wait_file(&work.join("service.out"));
    assert!(service.starts_with("65534 65534 65534 "), "{service}");
    assert_eq!(wait_file(&work.join("ready.out")), service, "ready.cmd");
    assert_eq!(wait_file(&work.join("live.out")), service, "live.cmd");
    let out = run.stop();
    out.assert_code(0);
}

#[test]
fn item03_a_notify_message_counts_only_from_the_service_it_names() {
    let d = TempDir::new("h2-notify");
    let w = open_dir(&d, "work");
    let w = w.display();
    // B (nobody) reads the socket names from /proc/net/unix, joins A's
    // process group if it can, and says READY=1 for A, then tells A.
    let attack = format!(
        "import os, socket, time\n\
         while not os.path.exists('{w}/a.pid'): time.sleep(0.02)\n\
         a = int(open('{w}/a.pid').read())\n\
         try:\n    os.setpgid(0, a); joined = 'joined'\n\
         except OSError: joined = 'refused'\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         for line in open('/proc/net/unix').read().splitlines():\n    \
             path = line.split()[-1]\n    \
             if path.startswith('@mc-launcher-notify-'):\n        \
                 s.sendto(b'READY=1', '\\0' + path[1:])\n\
         open('{w}/sent.tmp', 'w').write(joined + '\\n')\n\
         os.rename('{w}/sent.tmp', '{w}/sent')\n\
         time.sleep(1000)\n"
    );
    write(&d.join("attack.py"), &attack);
    // A (root) waits for it, then says something itself: once the launcher
    // shows that, it has read B's message (one socket, in order).
    let status = "import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); a = os.environ['NOTIFY_SOCKET']; s.sendto(b'STATUS=checked', '\\\\0' + a[1:])";
    let yml = format!(
            "services:\n  a:\n    cmd: [sh, -c, \"echo $$ > {w}/a.pid; while [ ! -e {w}/sent ]; do sleep 0.02; done; python3 -c \\\"{status}\\\"; exec sleep 1000\"]\n    ready:\n      notify: true\n      timeout: 60s\n  b:\n    cmd: [python3, {attack}]\n    user: nobody\n",
            attack = d.join("attack.py").display()
        );
    let run = launch_in(&d, &yml, &[]).spawn();
    assert!(
        wait_until(Duration::from_secs(15), || service_json(&run, "a")
            .is_some_and(|a| a["status"] == "checked")),
        "A's own message never arrived: {:?}",
        service_json(&run, "a")
    );
    let a = service_json(&run, "a").expect("a");
    assert_ne!(a["state"], "running", "B made A ready: {a}");
    assert_eq!(
        std::fs::read_to_string(d.join("work/sent")).expect("sent"),
        "refused\n",
        "B could join A's process group"
    );
    let out = run.stop();
    out.assert_code(0);
}

/// 50 bytes of template that stay within the fuel and render 15 MB.
const RENDER_BOMB: &str = "[{{ \"1,\" * 7800000 }}1]";

/// A launcher run that also says its peak memory: a wrapper that waits for
/// it and prints its `ru_maxrss` (KiB) as `peak-rss-kib N` on stderr.
fn with_peak_rss(d: &TempDir, launch: Launch) -> Launch {
    let script = d.join("peak-rss");
    write(
        &script,
        &format!(
            "#!/usr/bin/python3\nimport resource, subprocess, sys\nrc = subprocess.call([{:?}] + sys.argv[1:])\nsys.stderr.write('peak-rss-kib %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\nsys.exit(rc)\n",
            bin()
        ),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    launch.program(&script)
}

fn peak_of(out: &Output) -> u64 {
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak: {}", out.all()))
}

#[test]
fn item01_budgets_cover_what_a_template_renders() {
    use common::tree::Tree;
    // The pillar override in the volume: `check` and a start refuse it
    // with its file and line, small.
    let t = Tree::new(
        "h2-render-bomb",
        "services:\n  s:\n    cmd: [sleep, \"1000\"]\n",
    );
    write(
        &t.source(),
        &format!("makina-projects.demo:\n  data: {RENDER_BOMB}\n"),
    );
    for args in [vec!["check"], vec!["--", "true"]] {
        let d = TempDir::new("h2-render-bomb-run");
        let out = with_peak_rss(&d, t.launch(&args).not_pid1())
            .timeout(Duration::from_secs(60))
            .run();
        assert_eq!(out.code, Some(78), "{args:?}: {}", out.all());
        assert!(
            out.stderr.contains("configuration/pillar.sls:2:")
                && out.stderr.contains("output passed the limit of 4 MiB"),
            "{args:?}: {}",
            out.all()
        );
        assert!(peak_of(&out) < 64 * 1024, "{args:?}: {}", out.all());
    }
    // The same in mc-launcher.yml, and the node budget on a rendering
    // that fits in 4 MiB.
    for (bomb, line, what) in [
        (
            RENDER_BOMB,
            "mc-launcher.yml:5:",
            "output passed the limit of 4 MiB",
        ),
        (
            "[{{ \"1,\" * 1000000 }}1]",
            "mc-launcher.yml:5:",
            "more than 100000 nodes",
        ),
    ] {
        let t = Tree::new("h2-config-bomb", &format!("x-data: {bomb}\n"));
        let d = TempDir::new("h2-config-bomb-run");
        let out = with_peak_rss(&d, t.launch(&["check"]).not_pid1())
            .timeout(Duration::from_secs(60))
            .run();
        out.assert_code(78);
        out.assert_stderr(line);
        out.assert_stderr(what);
        assert!(peak_of(&out) < 64 * 1024, "{}", out.all());
    }
    // Live: the same override swapped in under a running PID 1 changes
    // nothing, and PID 1 never grows past 64 MiB.
    let t = Tree::default_socket(
        "h2-render-bomb-live",
        "services:\n  s:\n    cmd: [sleep, \"1000\"]\n",
    );
    write(&t.source(), "makina-projects.demo:\n  data: {site: one}\n");
    let run = t.launch(&[]).timeout(Duration::from_secs(120)).spawn();
    assert!(wait_until(Duration::from_secs(30), || service_json(
        &run, "s"
    )
    .is_some()));
    write(
        &t.source(),
        &format!("makina-projects.demo:\n  data: {RENDER_BOMB}\n"),
    );
    let out = ctl(&run, &["reconfigure"]);
    out.assert_stderr("configuration/pillar.sls:2:");
    out.assert_stderr("output passed the limit of 4 MiB");
    let hwm = peak_rss_kib(run.launcher_pid());
    let out = run.stop();
    out.assert_code(0);
    out.assert_stderr("invalid input, nothing changed");
    assert!(hwm < 64 * 1024, "PID 1 peaked at {hwm} KiB\n{}", out.all());
}

#[test]
fn item05_termination_log_through_a_planted_dir_link_stays_in_the_volume() {
    use common::tree::Tree;
    let t = Tree::new(
        "h2-termlog",
        "termination_log: \"{{ paths.volume }}/logs/termination-log\"\n",
    );
    let outside = t.root().join("outside");
    write(&outside.join("termination-log"), "precious\n");
    std::os::unix::fs::symlink(&outside, t.volume().join("logs")).expect("ln");
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(outside.join("termination-log")).expect("read"),
        "precious\n",
        "written through a link out of the volume"
    );
    // Without the link, the report lands where the config says.
    std::fs::remove_file(t.volume().join("logs")).expect("rm");
    std::fs::create_dir(t.volume().join("logs")).expect("mkdir");
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(0);
    let report = std::fs::read_to_string(t.volume().join("logs/termination-log")).expect("report");
    assert!(report.starts_with("exit 0: "), "{report}");
}

#[test]
fn item06_our_own_sigkill_after_an_earlier_oom_is_no_oom_kill() {
    let d = TempDir::new("h2-oom");
    let cg = d.join("cgroup");
    write(&cg.join("memory.events"), "oom 0\noom_kill 0\n");
    let up = d.join("up");
    let yml = "shutdown:\n  timeout: 20s\nservices:\n  stubborn:\n    cmd: [sh, -c, \"trap '' TERM; echo up > @D@/up; while :; do sleep 0.05; done\"]\n    critical: true\n    graceful_timeout: 500ms\n";
    let run = launch_in(&d, yml, &[])
        .env("MC_CGROUP_ROOT", &cg.to_string_lossy())
        .spawn();
    wait_file(&up);
    // An OOM kill somewhere in the container, long before the stop.
    write(&cg.join("memory.events"), "oom 1\noom_kill 1\n");
    let out = run.stop();
    out.assert_code(0);
    out.assert_stderr("killed by KILL");
    assert!(
        !out.stderr.contains("out of memory") && !out.stderr.contains("OOM"),
        "our own SIGKILL was called an OOM kill\n{}",
        out.all()
    );
}

/// Fill `sock`'s receive queue until one more datagram would block.
fn fill(path: &Path) {
    let s = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    s.set_nonblocking(true).expect("nonblocking");
    loop {
        match s.send_to(b"FILLER=1", path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("fill: {e}"),
        }
    }
}

#[test]
fn item04_a_full_outer_notify_socket_never_blocks_the_launcher() {
    let d = TempDir::new("h2-outer-notify");
    let path = d.join("outer.sock");
    let outer = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    fill(&path);
    let run = launch_in(&d, "services:\n  s:\n    cmd: [sleep, \"1000\"]\n", &[])
        .env("NOTIFY_SOCKET", &path.to_string_lossy())
        .spawn();
    // READY=1 is due at once, and the queue is full: the loop still serves.
    assert!(
        wait_until(Duration::from_secs(15), || service_json(&run, "s")
            .is_some_and(|s| s["state"] == "running")),
        "the launcher stopped answering"
    );
    // Room again: the message comes, after the fillers.
    outer
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    let first = loop {
        let n = outer.recv(&mut buf).expect("READY=1 after a retry");
        if &buf[..n] != b"FILLER=1" {
            break String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    };
    assert!(first.starts_with("READY=1"), "{first}");
    // Full again: SIGTERM is still honoured, STOPPING=1 counted as dropped.
    fill(&path);
    let out = run.stop();
    out.assert_code(0);
    out.assert_stderr("a message dropped");
    out.assert_stderr("1 dropped so far");
}

/// `mc-launcher -c CFG ctl ARGS`, run directly (a client, not a launcher),
/// with `d` as its root.
fn ctl_command(d: &TempDir, cfg: &str, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(bin());
    c.args(["-c", cfg, "ctl"]).args(args);
    c.env_remove("MC_LAUNCHER_CONFIG")
        .env("MC_ROOT", d.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

#[test]
fn item08_ctl_is_a_well_behaved_client() {
    use std::io::BufRead;
    let d = TempDir::new("h2-ctl-client");
    let sock = d.join("ctl.sock");
    // A "launcher" that accepts and never answers.
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let cfg = config(&d, &format!("control:\n  socket: {}\n", sock.display()));
    for (args, within) in [
        (vec!["--timeout", "300ms", "status"], "300ms"),
        (vec!["status"], "5s"),
    ] {
        let out = ctl_command(&d, &cfg, &args).output().expect("ctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the launcher at {} did not answer within {within}",
                sock.display()
            )),
            "{args:?}: {stderr}"
        );
    }
    // Ctrl-C and SIGTERM while it waits for the answer: it ends at once.
    for (sig, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        // A fresh socket: the one above still holds the earlier requests.
        let sock = d.join(&format!("ctl-{code}.sock"));
        let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let cfg = config(&d, &format!("control:\n  socket: {}\n", sock.display()));
        let mut child = ctl_command(&d, &cfg, &["--timeout", "1h", "status"])
            .spawn()
            .expect("ctl");
        let (conn, _) = listener.accept().expect("accept");
        let mut line = String::new();
        std::io::BufReader::new(&conn)
            .read_line(&mut line)
            .expect("request");
        assert!(line.contains("status"), "{line}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("kill");
        let st = child.wait().expect("wait");
        assert_eq!(st.code(), Some(code), "{sig}: {st:?}");
    }
}

#[test]
fn item09_a_file_name_from_the_volume_cannot_forge_log_lines() {
    use common::tree::Tree;
    let t = Tree::new("h2-forge", "");
    let home = t.root().join("home");
    std::fs::create_dir_all(&home).expect("home");
    write(
        &t.config(),
        &format!(
            "paths:\n  state: \"{{{{ root }}}}/state\"\ncontrol:\n  socket: \"{{{{ root }}}}/ctl.sock\"\nssh:\n  home: {}\n  sshd: never\n",
            home.display()
        ),
    );
    let keys = t.volume().join("ssh");
    std::fs::create_dir_all(&keys).expect("keys");
    let name = "x\nmc-launcher: exit 0: forged\x1b[2J.pub";
    write(&keys.join(name), "not a key\n");
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(0);
    assert!(
        out.stderr.contains("forged"),
        "the file is named: {}",
        out.all()
    );
    assert!(
        !out.stderr
            .lines()
            .any(|l| l.starts_with("mc-launcher: exit 0: forged")),
        "a forged line\n{}",
        out.all()
    );
    // a terminal escape
    out.assert_no_stderr("\x1b");
}

#[test]
fn item10_the_rate_limit_bounds_an_endless_line() {
    let d = TempDir::new("h2-rate");
    let out = launch_in(&d, "log:\n  rate_limit: {lines: 10, per: 1h}\nservices:\n  chatty:\n    cmd: [sh, -c, \"head -c 20000000 /dev/zero | tr '\\\\0' x; echo\"]\n    stdout: prefix\n    respawn: false\n    critical: true\n", &[])
        .timeout(Duration::from_secs(120))
        .run();
    assert_eq!(
        out.code,
        Some(0),
        "{}",
        &out.stderr[out.stderr.len().saturating_sub(2000)..]
    );
    // Ten records of at most 16 KiB each, whatever the line's length.
    assert!(
        out.stdout.len() <= 10 * 16 * 1024,
        "{} bytes through a limit of 10 lines",
        out.stdout.len()
    );
    assert!(out.stdout.len() >= 9 * 16 * 1000, "{}", out.stdout.len());
    out.assert_stderr("lines dropped (rate limit 10/1h)");
}

/// Send `request` on a fresh connection to `addr`, close our side at once,
/// and read the whole answer.
fn ask_and_half_close(addr: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("request");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn item11_http_exactly_as_documented() {
    let d = TempDir::new("h2-http");
    let addr = format!("127.0.0.1:{}", free_port());
    let yml =
        format!("metrics: {{listen: \"{addr}\"}}\nservices:\n  s:\n    cmd: [sleep, \"1000\"]\n");
    let run = launch_in(&d, &yml, &[]).spawn();
    assert!(wait_until(Duration::from_secs(15), || http_get(
        &addr, "/metrics"
    )
    .is_some()));
    // A request, then a half-close: every one is answered.
    for i in 0..20 {
        let a = ask_and_half_close(&addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 200 OK\r\n"), "try {i}: {a:?}");
        assert!(a.contains("# TYPE"), "try {i}: {a:?}");
    }
    // A head of exactly 8 KiB (blank line included) passes; one byte more
    // is 431.
    let head = |size: usize| {
        let fixed = "GET /metrics HTTP/1.1\r\nX: \r\n\r\n".len();
        format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(size - fixed)
        )
    };
    let a = ask_and_half_close(&addr, head(8192).as_bytes());
    assert!(a.starts_with("HTTP/1.1 200 "), "{a:?}");
    for size in [8193, 9 * 1024, 10 * 1024] {
        let a = ask_and_half_close(&addr, head(size).as_bytes());
        assert!(a.starts_with("HTTP/1.1 431 "), "{size}: {a:?}");
    }
    // HEAD: GET's status and headers, no body.
    let get = ask_and_half_close(&addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = ask_and_half_close(&addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    let (h, body) = head.split_once("\r\n\r\n").expect("head");
    assert_eq!(body, "", "{head:?}");
    let length = |h: &str| {
        h.lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .expect("Content-Length")
    };
    assert!(length(h) > 0);
    let (gh, gbody) = get.split_once("\r\n\r\n").expect("get");
    assert_eq!(length(gh), gbody.len());
    run.stop().assert_code(0);
}

/// `mc_probe_failures_total{probe=live,service=NAME}` from `ctl metrics`.
fn live_failures(run: &Running, name: &str) -> u64 {
    let out = ctl(run, &["metrics"]);
    let service = format!("service=\"{name}\"");
    out.stdout
        .lines()
        .filter(|l| l.starts_with("mc_probe_failures_total{"))
        .filter(|l| l.contains("probe=\"live\"") && l.contains(&service))
        .find_map(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn item07_threads_stay_constant_during_a_dns_outage() {
    let d = TempDir::new("h2-dns");
    let (_dns, scratch) = silent_dns("127.0.0.78");
    let run = launch_in(&d, "services:\n  web:\n    cmd: [sleep, \"1000\"]\n    live:\n      tcp: \"db.example.test:5432\"\n      period: 100ms\n      timeout: 100ms\n      failure_threshold: 1000000\n", &[])
        .nameserver("127.0.0.78", scratch.path())
        .timeout(Duration::from_secs(120))
        .spawn();
    let pid = run.launcher_pid();
    assert!(wait_until(Duration::from_secs(30), || live_failures(
        &run, "web"
    ) >= 5));
    let early = threads(pid);
    // Each failure is a probe that timed out waiting for the name; many
    // more of them, and not one more thread.
    assert!(wait_until(Duration::from_secs(60), || live_failures(
        &run, "web"
    ) >= 40));
    let late = threads(pid);
    assert_eq!(
        late, early,
        "threads grew from {early} to {late} during the outage"
    );
    assert!(late <= 4, "{late} threads");
    run.stop().assert_code(0);
}
