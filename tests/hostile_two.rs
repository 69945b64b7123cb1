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
    let cfg = config(
        &d,
        &format!(
            "services:\n  web:\n    cmd: [sh, -c, \"{me} > {w}/service.out; exec sleep 1000\"]\n    user: nobody\n    copy_env: false\n    working_dir: {w}\n    env: {{PROBE_MARK: svc}}\n    rlimits: {{nofile: 123}}\n    ready:\n      cmd: [sh, -c, \"{me} > {w}/ready.out\"]\n    live:\n      cmd: [sh, -c, \"{me} > {w}/live.out\"]\n      period: 200ms\n",
            w = work.display()
        ),
    );
    let run = Launch::new(&["-c", &cfg])
        .root(d.path())
        .env("LAUNCHER_ONLY", "leaked")
        .spawn();
    let service = wait_file(&work.join("service.out"));
    assert!(service.starts_with("65534 65534 65534 "), "{service}");
    assert_eq!(wait_file(&work.join("ready.out")), service, "ready.cmd");
    assert_eq!(wait_file(&work.join("live.out")), service, "live.cmd");
    run.signal(15);
    let out = run.wait();
    assert_eq!(out.code, Some(0), "{}", out.all());
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
    let cfg = config(
        &d,
        &format!(
            "services:\n  a:\n    cmd: [sh, -c, \"echo $$ > {w}/a.pid; while [ ! -e {w}/sent ]; do sleep 0.02; done; python3 -c \\\"{status}\\\"; exec sleep 1000\"]\n    ready:\n      notify: true\n      timeout: 60s\n  b:\n    cmd: [python3, {attack}]\n    user: nobody\n",
            attack = d.join("attack.py").display()
        ),
    );
    let run = Launch::new(&["-c", &cfg]).root(d.path()).spawn();
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
    run.signal(15);
    let out = run.wait();
    assert_eq!(out.code, Some(0), "{}", out.all());
}
