//! Harness for the integration tests: runs the real binary, as PID 1 of a new
//! pid namespace (`unshare --fork --pid --mount-proc`) or as a plain process,
//! always under a time limit, and kills what it started when done.
#![allow(dead_code)]

pub mod docker;
pub mod kubelet;
pub mod registry;
pub mod release;
pub mod salt;
pub mod tree;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `ssh` options of a test's login: no prompt, no host key check, no
/// known_hosts written.
pub const SSH_BATCH: &[&str] = &[
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
];

/// The launcher under test: the binary cargo built with the tests, or the
/// one `MC_TEST_BIN` names (scripts/test.sh points it at the static build).
pub fn bin() -> PathBuf {
    match std::env::var_os("MC_TEST_BIN").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_mc-launcher")),
    }
}

/// The tests' one temporary directory: unique per call, removed on drop,
/// so also when the test panics (unwinding drops it). Nothing a test makes
/// may live anywhere else in the host's temp dir.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("mcl-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
    /// The lines of stderr that hold `needle`.
    pub fn stderr_lines_with(&self, needle: &str) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.contains(needle)).collect()
    }
    /// Assert the exit status (the whole output in the message).
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Output {
        assert_eq!(self.code, Some(code), "{}", self.all());
        self
    }
    /// Assert that stderr (the launcher's log) holds `needle`.
    #[track_caller]
    pub fn assert_stderr(&self, needle: &str) -> &Output {
        self.assert_holds(&self.stderr, needle, true)
    }
    /// Assert that stderr holds every one of `parts`.
    #[track_caller]
    pub fn assert_stderr_all(&self, parts: &[String]) -> &Output {
        for part in parts {
            self.assert_stderr(part);
        }
        self
    }
    /// Assert that stderr holds `needle` exactly `n` times.
    #[track_caller]
    pub fn assert_stderr_count(&self, needle: &str, n: usize) -> &Output {
        let got = self.stderr.matches(needle).count();
        assert_eq!(got, n, "{needle:?} {got} times in\n{}", self.all());
        self
    }
    /// Assert that stderr does not hold `needle`.
    #[track_caller]
    pub fn assert_no_stderr(&self, needle: &str) -> &Output {
        self.assert_holds(&self.stderr, needle, false)
    }
    /// Assert that stdout holds `needle`.
    #[track_caller]
    pub fn assert_stdout(&self, needle: &str) -> &Output {
        self.assert_holds(&self.stdout, needle, true)
    }
    #[track_caller]
    fn assert_holds(&self, text: &str, needle: &str, want: bool) -> &Output {
        let verb = if want { "no" } else { "unwanted" };
        assert!(
            text.contains(needle) == want,
            "{verb} {needle:?} in\n{}",
            self.all()
        );
        self
    }
}

/// The launcher's default state directory, hidden behind a tmpfs.
pub const STATE_DIR: &str = "/var/lib/mc-launcher";

/// How to run the launcher.
pub struct Launch {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub pid1: bool,
    pub timeout: Duration,
    pub root: Option<PathBuf>,
    /// Directories hidden behind a fresh tmpfs in the launcher's mount
    /// namespace (`/run` always; `/root`, `/etc/ssh` for SSH tests).
    pub tmpfs: Vec<String>,
    /// A shell command run after the launcher exits, in its mount
    /// namespace (to look at a private filesystem it wrote to).
    pub after: Option<String>,
    /// A shell command run in the private mount namespace before the
    /// launcher starts (to put files in a private /etc, say).
    pub before: Option<String>,
    /// Other mount commands run in the namespace before the launcher.
    pub mounts: Vec<String>,
    /// What to run instead of the launcher (a script that execs it).
    pub program: Option<PathBuf>,
}

impl Launch {
    pub fn new(args: &[&str]) -> Launch {
        Launch {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            pid1: true,
            timeout: Duration::from_secs(20),
            root: None,
            // /run for the control socket, /root so that no test ever reads
            // or writes the host's SSH keys, the launcher's default state
            // dir so that no test leaves state (a saved pillar) on the host.
            tmpfs: vec![
                "/run".to_string(),
                "/root".to_string(),
                STATE_DIR.to_string(),
            ],
            after: None,
            before: None,
            mounts: Vec::new(),
            program: None,
        }
    }
    /// Run `program` (which execs the launcher) instead of the launcher.
    pub fn program(mut self, program: &Path) -> Launch {
        self.program = Some(program.to_path_buf());
        self
    }
    pub fn not_pid1(self) -> Launch {
        self.pid1(false)
    }
    /// As PID 1 of a new pid namespace, or as a plain process.
    pub fn pid1(mut self, pid1: bool) -> Launch {
        self.pid1 = pid1;
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Launch {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    /// A private root so that no test reads the host's /srv.
    pub fn root(mut self, root: &Path) -> Launch {
        self.root = Some(root.to_path_buf());
        self
    }
    /// Hide `dir` behind a private tmpfs (the host's stays untouched).
    pub fn tmpfs(mut self, dir: &str) -> Launch {
        self.tmpfs.push(dir.to_string());
        self
    }
    /// A private, writable view of `dir` (e.g. `/etc`): an overlay whose
    /// writes land in `scratch`, never in the host's directory.
    pub fn overlay(mut self, dir: &str, scratch: &Path) -> Launch {
        let (u, w) = (scratch.join("upper"), scratch.join("work"));
        let _ = std::fs::create_dir_all(&u);
        let _ = std::fs::create_dir_all(&w);
        self.mounts.push(format!(
            "mount -t overlay overlay -o lowerdir={dir},upperdir={},workdir={} {dir}",
            u.display(),
            w.display()
        ));
        self
    }
    /// Names resolved only through DNS at `nameserver` (a private /etc,
    /// its writes in `scratch`), with a 30 s resolver timeout.
    pub fn nameserver(self, nameserver: &str, scratch: &Path) -> Launch {
        self.overlay("/etc", scratch).before(&format!(
            "printf 'nameserver {nameserver}\\noptions timeout:30 attempts:1\\n' > /etc/resolv.conf; printf 'hosts: dns\\n' > /etc/nsswitch.conf"
        ))
    }
    /// A tmpfs of `size` (e.g. `1m`) over `dir`.
    pub fn tmpfs_sized(mut self, dir: &Path, size: &str) -> Launch {
        self.tmpfs.push(format!("-o size={size} {}", dir.display()));
        self
    }
    pub fn before(mut self, shell: &str) -> Launch {
        self.before = Some(shell.to_string());
        self
    }
    pub fn after(mut self, shell: &str) -> Launch {
        self.after = Some(shell.to_string());
        self
    }
    pub fn timeout(mut self, d: Duration) -> Launch {
        self.timeout = d;
        self
    }

    /// The command that runs the launcher with `MC_ROOT` = `root`.
    fn command(&self, root: &Path) -> Command {
        // A private mount namespace, with tmpfs over /run (and whatever else
        // the test asks for), then exec: the pid we spawn becomes the
        // launcher itself, or the `unshare --fork` parent of PID 1.
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"]);
        let mounts: String = self
            .tmpfs
            .iter()
            .map(|d| {
                // The state dir may not exist on this host: its mount point
                // (an empty directory) is made first.
                let mkdir = if d == STATE_DIR {
                    format!("mkdir -p {d} && ")
                } else {
                    String::new()
                };
                format!("{mkdir}mount -t tmpfs -o mode=0755 tmpfs {d} && ")
            })
            .collect();
        let mounts: String = mounts
            + &self
                .mounts
                .iter()
                .map(|m| format!("{m} && "))
                .collect::<String>();
        let mounts = match &self.before {
            Some(before) => format!("{mounts}{{ {before}; }} && "),
            None => mounts,
        };
        match &self.after {
            None => c.arg(format!("{mounts}exec \"$@\"")),
            Some(after) => c.arg(format!("{mounts}\"$@\"; rc=$?; {after}; exit $rc")),
        };
        c.arg("sh");
        if self.pid1 {
            c.args(["unshare", "--fork", "--pid", "--mount-proc", "--kill-child"]);
        }
        c.arg(self.program.clone().unwrap_or_else(bin));
        c.args(&self.args);
        c.env_remove("MC_LAUNCHER_CONFIG")
            .env_remove("MC_PROJECT")
            .env_remove("MC_SKIP")
            .env_remove("MC_LOG");
        c.env("MC_ROOT", root);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn spawn(&self) -> Running {
        // Without a root of its own, the launcher gets an empty one that
        // lives as long as it runs: what it writes there (SSH host keys,
        // state) goes with it.
        let empty = self.root.is_none().then(|| TempDir::new("root"));
        let root = match (&self.root, &empty) {
            (Some(r), _) => r.clone(),
            (None, e) => e.as_ref().map(|e| e.0.clone()).unwrap_or_default(),
        };
        let mut child = self.command(&root).spawn().expect("spawn launcher");
        // Drain the output while the launcher runs: a full pipe would block
        // its writes (and its whole event loop) long before `wait`.
        let collect = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = child.stdout.take().map(|o| collect(Box::new(o)));
        let err = child.stderr.take().map(|e| collect(Box::new(e)));
        Running {
            out,
            err,
            child,
            root,
            _empty_root: empty,
            pid1: self.pid1,
            started: Instant::now(),
            timeout: self.timeout,
        }
    }

    /// Run to completion (or the time limit, then kill and fail).
    pub fn run(&self) -> Output {
        self.spawn().wait()
    }
}

pub struct Running {
    pub child: Child,
    /// The launcher's `MC_ROOT`.
    pub root: PathBuf,
    /// The empty root made for it (removed after the launcher is gone).
    _empty_root: Option<TempDir>,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
    pub pid1: bool,
    pub started: Instant,
    pub timeout: Duration,
}

impl Running {
    /// The launcher's pid as seen from here (the namespace's PID 1 when pid1).
    pub fn launcher_pid(&self) -> i32 {
        let outer = self.child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let is_launcher =
                |pid: i32| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == bin());
            // The launcher is the outer process itself, or a child or
            // grandchild of it (behind `sh` and `unshare --fork`).
            let mut near = vec![outer];
            for c in children_of(outer) {
                near.push(c);
                near.extend(children_of(c));
            }
            if let Some(pid) = near.into_iter().find(|&p| is_launcher(p)) {
                return pid;
            }
            assert!(Instant::now() < deadline, "the launcher never started");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Wait until the launcher has blocked SIGTERM (it is running our code).
    pub fn wait_signals_blocked(&self) -> i32 {
        let pid = self.launcher_pid();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let exe_ok = std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p == bin())
                .unwrap_or(false);
            if exe_ok && sig_blocked(pid, 15) {
                return pid;
            }
            assert!(Instant::now() < deadline, "launcher never blocked signals");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.launcher_pid();
        // SAFETY: kill(2) on a pid we started.
        unsafe {
            libc_kill(pid, sig);
        }
    }

    /// TERM the launcher and wait for its exit.
    pub fn stop(self) -> Output {
        self.signal(15);
        self.wait()
    }

    /// Wait for the exit; on timeout kill the whole namespace and fail.
    pub fn wait(mut self) -> Output {
        let deadline = self.started + self.timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break Some(st);
            }
            if Instant::now() > deadline {
                self.kill_all();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let elapsed = self.started.elapsed();
        let stdout = self
            .out
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let Some(status) = status else {
            panic!(
                "launcher did not exit within {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}",
                self.timeout
            );
        };
        use std::os::unix::process::ExitStatusExt;
        let code = status.code().or(status.signal().map(|s| 128 + s));
        Output {
            code,
            stdout,
            stderr,
            elapsed,
        }
    }

    /// SIGKILL the launcher (as PID 1 that ends its whole namespace).
    pub fn kill_all(&mut self) {
        if self.pid1 {
            if let Some(pid) = children_of(self.child.id() as i32).first() {
                unsafe { libc_kill(*pid, 9) };
            }
        }
        let _ = self.child.kill();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_all();
            let _ = self.child.wait();
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// Direct children of `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&c| proc_ppid(c) == Some(pid))
        .collect()
}

pub fn proc_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn sig_blocked(pid: i32, sig: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}

/// Pids whose command line contains `needle` (to prove nothing is left).
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let text = String::from_utf8_lossy(&cmd).replace('\0', " ");
                text.contains(needle) && !text.contains("mc-launcher")
            })
        })
        .collect()
}

/// A DNS server at `ip`:53 that hears queries and never answers them
/// (binding port 53 needs root), and a scratch dir for a private /etc
/// that names it (`Launch::nameserver`).
pub fn silent_dns(ip: &str) -> (std::net::UdpSocket, TempDir) {
    let dns = std::net::UdpSocket::bind(format!("{ip}:53")).expect("bind port 53 (as root)");
    (dns, TempDir::new("dns-etc"))
}

/// The preflight message in a log: from its first line ("cannot prepare
/// this container") to the end of its indented lines.
pub fn preflight_message(log: &str) -> String {
    let Some(start) = log.find("cannot prepare this container") else {
        return String::new();
    };
    let mut lines = log[start..].lines();
    let mut out = vec![lines.next().unwrap_or("").to_string()];
    out.extend(
        lines
            .take_while(|l| l.starts_with("  "))
            .map(str::to_string),
    );
    out.join("\n")
}

/// Wait until `f` holds or the limit passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// `chown -R OWNER PATH`, which must succeed.
pub fn chown_r(owner: &str, path: &Path) {
    let st = Command::new("chown")
        .args(["-R", owner])
        .arg(path)
        .status()
        .expect("chown");
    assert!(st.success(), "chown -R {owner} {}", path.display());
}

pub fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// Run `mc-launcher ctl ARGS` inside the launcher's mount namespace (where
/// its private /run holds the socket), optionally as another user.
pub fn ctl_as(run: &Running, user: Option<u32>, args: &[&str]) -> Output {
    run_command(ctl_command(run, user, args))
}

/// The launcher as uid 65534 (nobody) through setpriv, not as PID 1;
/// `args` its arguments.
pub fn as_nobody(args: &[&str]) -> Launch {
    let bin = bin().to_string_lossy().into_owned();
    let mut argv = vec!["--reuid=65534", "--regid=65534", "--clear-groups", &bin];
    argv.extend_from_slice(args);
    Launch::new(&argv)
        .program(Path::new("/usr/bin/setpriv"))
        .not_pid1()
}

/// The command `ctl_as` runs, to adjust before running it.
pub fn ctl_command(run: &Running, user: Option<u32>, args: &[&str]) -> Command {
    let pid = run.launcher_pid();
    let mut c = Command::new("nsenter");
    c.args(["--mount", "--target", &pid.to_string(), "--"]);
    if let Some(uid) = user {
        c.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
        ]);
    }
    c.arg(bin()).arg("ctl").args(args);
    c.env("MC_ROOT", &run.root);
    c.env_remove("MC_LAUNCHER_CONFIG");
    c
}

/// Run `c` to its end; its output.
pub fn run_command(mut c: Command) -> Output {
    let started = Instant::now();
    let out = c.output().expect("run a command");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

pub fn ctl(run: &Running, args: &[&str]) -> Output {
    ctl_as(run, None, args)
}

/// The launcher's control socket, reached through its mount namespace.
pub fn socket_path(run: &Running) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/root/run/mc-launcher.sock",
        run.launcher_pid()
    ))
}

/// The repository's top directory.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `layout/install SRV example example-project`: the example project's
/// tree under `srv`, as the image has it.
pub fn install_example(srv: &Path) {
    let st = Command::new(repo().join("layout/install"))
        .arg(srv)
        .arg("example")
        .arg(repo().join("example-project"))
        .status()
        .expect("layout/install");
    assert!(st.success(), "layout/install failed");
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `127.0.0.1:PORT` with a port nobody listens on right now.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// `GET path` over plain HTTP/1.0; the body, or `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// One HTTP/1.1 exchange: the status line's code, the head, the body.
pub fn http_exchange(addr: &str, request: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("a head");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (code, head.to_string(), body.to_string())
}

/// A python3 one-liner that sends `message` to $NOTIFY_SOCKET (sd_notify).
pub fn python_notify(message: &str) -> String {
    format!(
        "import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); a = os.environ['NOTIFY_SOCKET']; s.sendto(b'{message}', '\\\\0' + a[1:] if a.startswith('@') else a)"
    )
}

/// How often `pid` has gone to sleep and been woken (its voluntary context
/// switches): the idle tests' measure of wake-ups.
pub fn voluntary_switches(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("switch count")
}

/// The pids of service `name` in a `ctl status --json` answer.
pub fn status_pids(status: &serde_json::Value, name: &str) -> Vec<i64> {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .and_then(|s| s["pids"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.as_i64())
        .collect()
}

/// How many times `pid` woke up during `d` of sleep of ours.
pub fn wakeups_over(pid: i32, d: Duration) -> u64 {
    let before = voluntary_switches(pid);
    std::thread::sleep(d);
    voluntary_switches(pid) - before
}

/// `mc-launcher.yml` in `d` with `body` (`@D@` in it stands for `d`);
/// its path, for `-c`.
pub fn config(d: &TempDir, body: &str) -> String {
    let p = d.join("mc-launcher.yml");
    write(&p, &body.replace("@D@", &d.path().to_string_lossy()));
    p.to_string_lossy().into_owned()
}

/// The former name of `config`, kept for branches written before it.
pub fn config_in(d: &TempDir, body: &str) -> String {
    config(d, body)
}

/// A config: `head`, then `services:` with `n` services, the entry of
/// service `i` (from its name line on) made by `service(i)`.
pub fn services_yml(head: &str, n: usize, service: impl Fn(usize) -> String) -> String {
    let entries: String = (0..n).map(service).collect();
    format!("{head}services:\n{entries}")
}

/// A config of services that only sleep, one `(name, seconds)` row each.
pub fn sleepers(rows: &[(&str, u32)]) -> String {
    services_yml("", rows.len(), |i| {
        let (name, secs) = rows[i];
        format!("  {name}:\n    cmd: [\"sleep\", \"{secs}\"]\n")
    })
}

/// A config: `head`, then four services `flood0`… that write to stdout and
/// stderr as fast as they can, both captured (prefixed).
pub fn flooders(head: &str) -> String {
    services_yml(head, 4, |i| {
        format!(
            "  flood{i}:\n    cmd: [\"sh\", \"-c\", \"yes flood{i}-stderr-line >&2 & exec yes flood{i}-stdout-line\"]\n    stdout: prefix\n    stderr: prefix\n"
        )
    })
}

/// The launcher on `mc-launcher.yml` = `body` in `d`, `d` its root
/// (`-c CFG`, then `args`).
pub fn launch_in(d: &TempDir, body: &str, args: &[&str]) -> Launch {
    let cfg = config(d, body);
    let mut all = vec!["-c", cfg.as_str()];
    all.extend_from_slice(args);
    Launch::new(&all).root(d.path())
}

/// The lines of a file (none when it does not exist yet).
pub fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The answers of `ctl`, typed: the one place that names the wire types
/// (a rename in `ctl::proto` is a change here only).
pub use mc_launcher::ctl::proto::{Reply, ServiceState};

/// `ctl --json status`, typed; `None` while no launcher answers.
pub fn status(run: &Running) -> Option<Reply> {
    let out = ctl(run, &["--json", "status"]);
    serde_json::from_str(out.stdout.trim()).ok()
}

/// Service `name`'s row of `status`; `None` while no launcher answers or
/// it has no such service.
pub fn service(run: &Running, name: &str) -> Option<ServiceState> {
    status(run)?.services?.into_iter().find(|s| s.name == name)
}

/// The pids of service `name` (none while no launcher answers).
pub fn pids(run: &Running, name: &str) -> Vec<i32> {
    service(run, name).map(|s| s.pids).unwrap_or_default()
}

/// The state of service `name` (`""` while no launcher answers).
pub fn state(run: &Running, name: &str) -> &'static str {
    service(run, name).map_or("", |s| s.state.as_str())
}

/// Wait until service `name` is in `state` (e.g. `running`), and return
/// its row; fail after `limit`.
#[track_caller]
pub fn wait_state(run: &Running, name: &str, want: &str, limit: Duration) -> ServiceState {
    let mut last = None;
    let ok = wait_until(limit, || {
        last = service(run, name);
        last.as_ref().is_some_and(|s| s.state.as_str() == want)
    });
    assert!(ok, "{name} never {want}: {last:?}");
    last.expect("checked above")
}

/// `ctl --json status`, parsed.
pub fn status_json(run: &Running) -> serde_json::Value {
    let out = ctl(run, &["--json", "status"]);
    serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Service `name` in the launcher's `ctl --json status` answer; `None`
/// while no launcher answers (not listening yet) or it has no such service.
pub fn service_json(run: &Running, name: &str) -> Option<serde_json::Value> {
    let out = ctl(run, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).ok()?;
    v["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
}

/// The peak resident memory (`VmHWM`) of running process `pid`, in KiB.
pub fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

/// `Threads:` of `/proc/PID/status`.
pub fn threads(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Threads line")
}
