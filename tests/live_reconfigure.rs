//! Live reconfigure (README "Live reconfigure") on a real launcher, PID 1
//! of its own pid namespace: the pillar override updated exactly as the
//! kubelet updates a ConfigMap volume (tests/common/kubelet.rs), a plain
//! edit, template sources, `ctl reconfigure`, and what each service's
//! `on_reconfigure` does. Every wait is on an event (a file a service or a
//! step writes, a `ctl status` answer); the only time bounds are the
//! issue's "within 3 s" as timeouts.

mod common;
use common::kubelet::kubelet_write;
use common::tree::Tree;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// "Applied within 3 s" of the change (the debounce is 500 ms).
const APPLIED: Duration = Duration::from_secs(3);
/// The launcher's start (the prepare phase), a hang guard.
const STARTED: Duration = Duration::from_secs(10);

/// The template renders the pillar's `site`; `reloader` traps HUP and
/// writes what it then reads; `restarter` (the default) and `steady`
/// (`none`) write their pid at each start.
fn config(extra_steps: &str) -> String {
    format!(
        r#"pillar:
  source: "{{{{ paths.volume }}}}/configmap/pillar.sls"
reconfigure:
  watch: true
  steps:
    - template:
        src: "{{{{ paths.project }}}}/.salt/files/app.conf.j2"
        dest: "{{{{ paths.volume }}}}/configuration/app.conf"
{extra_steps}services:
  reloader:
    shell: true
    cmd: "echo $$ >> {{{{ root }}}}/reloader.pids; trap 'echo hup $(cat {{{{ paths.volume }}}}/configuration/app.conf) >> {{{{ root }}}}/reloader.log' HUP; while :; do sleep 1000 & wait $!; done"
    on_reconfigure: reload
  restarter:
    shell: true
    cmd: "echo $$ >> {{{{ root }}}}/restarter.pids; exec sleep 1000"
  steady:
    shell: true
    cmd: "echo $$ >> {{{{ root }}}}/steady.pids; exec sleep 1001"
    on_reconfigure: none
"#
    )
}

fn pillar(site: &str) -> String {
    format!("makina-projects.demo:\n  data:\n    site: {site}\n")
}

struct Live {
    t: Tree,
}

impl Live {
    fn new(tag: &str, extra_steps: &str) -> Live {
        let t = Tree::default_socket(tag, &config(extra_steps));
        write(
            &t.project().join(".salt/files/app.conf.j2"),
            "site={{ pillar['makina-projects.demo'].data.site }}\n",
        );
        Live { t }
    }
    fn configmap(&self) -> PathBuf {
        self.t.volume().join("configmap")
    }
    /// Update the "mounted ConfigMap" as the kubelet does.
    fn kubelet(&self, text: &str) {
        std::fs::create_dir_all(self.configmap()).expect("mount point");
        kubelet_write(&self.configmap(), &[("pillar.sls", text.as_bytes(), 0o644)])
            .expect("kubelet write");
    }
    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.t.root().join(name)).unwrap_or_default()
    }
    fn lines(&self, name: &str) -> Vec<String> {
        self.file(name).lines().map(str::to_string).collect()
    }
    fn app_conf(&self) -> String {
        std::fs::read_to_string(self.t.volume().join("configuration/app.conf")).unwrap_or_default()
    }
    fn start(&self) -> Running {
        self.start_with(self.t.launch(&[]), STARTED)
    }
    fn start_with(&self, launch: Launch, within: Duration) -> Running {
        let run = launch.timeout(Duration::from_secs(240)).spawn();
        let up = wait_until(within, || {
            ["reloader.pids", "restarter.pids", "steady.pids"]
                .iter()
                .all(|f| self.lines(f).len() == 1)
                && status(&run).contains("reloader")
        });
        assert!(up, "the services did not start");
        run
    }
}

fn status(run: &Running) -> String {
    ctl(run, &["status"]).stdout
}

/// Wait until `ctl status` says `want`; fail after `APPLIED`.
#[track_caller]
fn wait_status(run: &Running, want: &str) {
    let mut st = String::new();
    let seen = wait_until(APPLIED, || {
        st = status(run);
        st.contains(want)
    });
    assert!(seen, "{want:?} never in\n{st}");
}

fn status_json(run: &Running) -> serde_json::Value {
    serde_json::from_str(&ctl(run, &["status", "--json"]).stdout).unwrap_or_default()
}

/// The pids `ctl status` gives for `name`.
fn pids(run: &Running, name: &str) -> Vec<i64> {
    status_pids(&status_json(run), name)
}

/// Whether `text` holds `path:LINE:COL`.
fn names_line_and_col(text: &str, path: &Path) -> bool {
    let p = path.display().to_string();
    text.match_indices(&p).any(|(i, _)| {
        let rest = &text[i + p.len()..];
        let mut parts = rest.splitn(4, ':');
        parts.next() == Some("")
            && parts.next().is_some_and(|l| l.parse::<u32>().is_ok())
            && parts.next().is_some_and(|c| c.parse::<u32>().is_ok())
    })
}

#[test]
fn a_kubelet_configmap_update_is_applied_live_service_by_service() {
    let l = Live::new("live-k8s", "");
    l.kubelet(&pillar("one"));
    let run = l.start();
    assert_eq!(l.app_conf(), "site=one\n", "rendered by the prepare phase");
    let reloader = pids(&run, "reloader");
    let restarter = pids(&run, "restarter");
    let steady = pids(&run, "steady");
    assert_eq!(reloader.len(), 1);

    // 1. The kubelet's swap: rendered, reloaded (same pid), restarted (new
    //    pid), untouched (none), within 3 s.
    l.kubelet(&pillar("two"));
    assert!(
        wait_until(APPLIED, || l.lines("reloader.log") == ["hup site=two"]),
        "reloader not reloaded with the new rendering: {:?}\n{}",
        l.lines("reloader.log"),
        status(&run)
    );
    assert_eq!(l.app_conf(), "site=two\n");
    assert!(
        wait_until(APPLIED, || l.lines("restarter.pids").len() == 2),
        "restarter not restarted"
    );
    assert_eq!(pids(&run, "reloader"), reloader, "a reload keeps the pid");
    assert_eq!(l.lines("reloader.pids").len(), 1);
    assert!(wait_until(APPLIED, || {
        let now = pids(&run, "restarter");
        !now.is_empty() && now != restarter
    }));
    assert_eq!(pids(&run, "steady"), steady, "on_reconfigure: none");
    assert_eq!(l.lines("steady.pids").len(), 1);
    let st = status(&run);
    assert!(st.contains("reconfigure: ok"), "{st}");
    assert!(st.contains("reloaded reloader (HUP)"), "{st}");

    // 2. An invalid update changes nothing and is shown with file:line:col
    //    until fixed.
    let init_before = std::fs::read_to_string(l.t.pillar()).expect("init.sls");
    l.kubelet("makina-projects.demo:\n  data: [1,\n");
    wait_status(&run, "reconfigure: invalid");
    let st = status(&run);
    let source = l.configmap().join("pillar.sls");
    assert!(names_line_and_col(&st, &source), "{st}");
    let json = status_json(&run);
    assert_eq!(json["reconfigure"]["last"], "invalid", "{json}");
    assert!(
        names_line_and_col(json["reconfigure"]["error"].as_str().unwrap_or(""), &source),
        "{json}"
    );
    assert_eq!(
        std::fs::read_to_string(l.t.pillar()).expect("init"),
        init_before
    );
    assert_eq!(l.app_conf(), "site=two\n");
    assert_eq!(l.lines("reloader.log").len(), 1, "no service touched");
    assert_eq!(l.lines("restarter.pids").len(), 2);
    assert!(status(&run).contains("reconfigure: invalid"), "still shown");

    // 3. The fix applies.
    l.kubelet(&pillar("three"));
    assert!(
        wait_until(APPLIED, || l.lines("reloader.log").len() == 2),
        "the fixed pillar was not applied\n{}",
        status(&run)
    );
    assert_eq!(l.lines("reloader.log")[1], "hup site=three");
    assert!(status(&run).contains("reconfigure: ok"));

    // 4. A pillar change that renders the same output touches nothing.
    l.kubelet(&format!("{}other: unused\n", pillar("three")));
    wait_status(&run, "nothing changed");
    assert_eq!(l.lines("reloader.log").len(), 2);
    assert!(wait_until(APPLIED, || l.lines("restarter.pids").len() == 3));
    assert_eq!(
        l.lines("restarter.pids").len(),
        3,
        "restarted once per change"
    );

    // 5. `ctl reconfigure` on request: nothing to do, and it says so.
    let out = ctl(&run, &["reconfigure"]);
    out.assert_code(0);
    out.assert_stdout("nothing changed");

    // 6. A template source is watched too.
    write(
        &l.t.project().join(".salt/files/app.conf.j2"),
        "site={{ pillar['makina-projects.demo'].data.site }}!\n",
    );
    assert!(
        wait_until(APPLIED, || l.lines("reloader.log").len() == 3),
        "{}",
        status(&run)
    );
    assert_eq!(l.lines("reloader.log")[2], "hup site=three!");
    // The restart it also asked for has happened (a new pid written).
    assert!(wait_until(APPLIED, || l.lines("restarter.pids").len() == 4));

    // 7. Idle again: no wake-up while nothing changes.
    let pid = run.launcher_pid();
    let woke = wakeups_over(pid, Duration::from_secs(2));
    let out = run.stop();
    assert_eq!(
        woke,
        0,
        "the launcher woke up {} times while idle\n{}",
        woke,
        out.all()
    );
    out.assert_code(0);
    assert!(
        out.stderr
            .contains("reconfigure: invalid input, nothing changed"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failing_command_step_touches_nothing_and_is_retried() {
    let l = Live::new(
        "live-fail",
        "    - command: [\"sh\", \"-c\", \"echo run >> {{ root }}/runs; test ! -e {{ root }}/fail\"]\n",
    );
    // A plain file this time (no kubelet): a plain edit is seen too.
    let source = l.configmap().join("pillar.sls");
    write(&source, &pillar("one"));
    let run = l.start();
    assert_eq!(l.lines("runs").len(), 1, "the prepare phase ran it");

    write(&l.t.root().join("fail"), "");
    write(&source, &pillar("two"));
    wait_status(&run, "reconfigure: failed");
    assert_eq!(
        l.lines("runs").len(),
        2,
        "the step ran in the live reconfigure"
    );
    let st = status(&run);
    assert!(st.contains("command-2"), "the failed step is named: {st}");
    assert!(l.lines("reloader.log").is_empty(), "no service touched");
    assert_eq!(l.lines("restarter.pids").len(), 1);

    // Retried at the next change, even one that by itself reruns no step
    // (the template source saved as it was); then the services are acted on.
    std::fs::remove_file(l.t.root().join("fail")).expect("rm");
    let src = l.t.project().join(".salt/files/app.conf.j2");
    let same = std::fs::read_to_string(&src).expect("template");
    write(&src, &same);
    wait_status(&run, "reconfigure: ok");
    let st = status(&run);
    assert!(st.contains("ran: command-2"), "{st}");
    assert!(st.contains("retried the last failed reconfigure"), "{st}");
    assert_eq!(l.lines("runs").len(), 3);
    assert!(wait_until(APPLIED, || l.lines("reloader.log") == ["hup site=two"]));
    assert!(wait_until(APPLIED, || l.lines("restarter.pids").len() == 2));

    // Retried once: the next request, with nothing changed, runs nothing.
    let out = ctl(&run, &["reconfigure"]);
    out.assert_stdout("nothing changed");
    assert_eq!(l.lines("runs").len(), 3);
    let out = run.stop();
    out.assert_code(0);
    assert!(
        out.stdout.contains("command-2 | ") || out.stderr.contains("command-2"),
        "{}",
        out.all()
    );
}

/// README "Kubernetes": SSH keys from a Secret volume. The kubelet's
/// layout in the key directory (`NAME.pub -> ..data/NAME.pub`, files 0400)
/// is read through links that stay beneath the key directory; its update
/// (the `..data` swap) is seen by `ssh.watch` like any change; a link that
/// leads out of the key directory is refused, even into the volume.
#[test]
fn ssh_keys_from_a_secret_follow_the_kubelet_swap_and_never_leave_the_key_dir() {
    let t = Tree::default_socket("live-ssh", "ssh:\n  sshd: never\n  watch: true\n");
    let keys = t.d.join("keys");
    let (_, one) = common::tree::keypair(&keys, "one");
    let (_, two) = common::tree::keypair(&keys, "two");
    let (_, three) = common::tree::keypair(&keys, "three");
    let (_, four) = common::tree::keypair(&keys, "four");
    let secret = t.volume().join("ssh");
    std::fs::create_dir_all(&secret).expect("mount point");
    let project = |files: &[(&str, &str)]| {
        let owned: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, k)| (n.to_string(), format!("{k}\n").into_bytes()))
            .collect();
        let payload: Vec<(&str, &[u8], u32)> = owned
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice(), 0o400))
            .collect();
        kubelet_write(&secret, &payload).expect("kubelet write");
    };
    project(&[("one.pub", &one)]);
    let run = t.launch(&["--", "sleep", "1000"]).spawn();
    let pid = run.wait_signals_blocked();
    let keys_file = PathBuf::from(format!("/proc/{pid}/root/root/.ssh/authorized_keys"));
    let installed = || std::fs::read_to_string(&keys_file).unwrap_or_default();
    let has = |name: &str| installed().contains(&format!(" {name}\n"));
    assert!(
        wait_until(STARTED, || has("one")),
        "the Secret's key, through ..data: {}",
        installed()
    );

    // The Secret changes: one.pub goes, two.pub comes, by the ..data swap.
    project(&[("two.pub", &two)]);
    assert!(
        wait_until(APPLIED, || has("two") && !has("one")),
        "{}",
        installed()
    );

    // A link out of the key directory (into the volume, even) is refused.
    write(
        &t.volume().join("elsewhere/three.pub"),
        &format!("{three}\n"),
    );
    std::os::unix::fs::symlink("../elsewhere/three.pub", secret.join("evil.pub")).expect("ln");
    project(&[("two.pub", &two), ("four.pub", &four)]);
    // The scan that sees four.pub, made after evil.pub, has seen evil.pub.
    assert!(wait_until(APPLIED, || has("four")), "{}", installed());
    assert!(has("two") && !has("three"), "{}", installed());
    let out = run.stop();
    assert!(
        out.stderr.contains("evil.pub") && out.stderr.contains("outside the key directory"),
        "{}",
        out.all()
    );
    assert_eq!(
        out.code,
        Some(143),
        "the main command's TERM\n{}",
        out.all()
    );
}

/// `check` accepts the new keys and says the steps are applied live.
#[test]
fn check_accepts_the_live_reconfigure_keys() {
    let l = Live::new("live-check", "");
    let out = l.t.launch(&["check"]).not_pid1().run();
    out.assert_code(0);
    out.assert_stdout("reconfigure  1 step(s), applied live (reconfigure.watch)");
}

/// mc-launcher.yml is watched and validated too: a broken edit changes
/// nothing and is shown with file:line:col; the fixed file applies, its
/// new template step included.
#[test]
fn an_invalid_config_edit_changes_nothing_until_fixed() {
    let l = Live::new("live-config", "");
    l.kubelet(&pillar("one"));
    let run = l.start();
    let cfg = l.t.config();
    let good = std::fs::read_to_string(&cfg).expect("config");
    write(&cfg, &format!("{good}bogus: 1\n"));
    wait_status(&run, "reconfigure: invalid");
    let st = status(&run);
    assert!(names_line_and_col(&st, &cfg), "{st}");
    assert!(st.contains("unknown key `bogus`"), "{st}");
    assert!(l.lines("reloader.log").is_empty());
    // Fixed, with a second template: it is rendered, the services acted on.
    let second = good.replace(
        "services:\n",
        "    - template:\n        src: \"{{ paths.project }}/.salt/files/app.conf.j2\"\n        dest: \"{{ root }}/second.conf\"\nservices:\n",
    );
    write(&cfg, &second);
    assert!(
        wait_until(APPLIED, || l.lines("reloader.log").len() == 1),
        "{}",
        status(&run)
    );
    assert_eq!(l.file("second.conf"), "site=one\n");
    assert!(status(&run).contains("reconfigure: ok"));
    run.stop().assert_code(0);
}

/// The steps of a live reconfigure are children of the one loop: a
/// service that dies while a step runs is reaped and respawned as usual
/// (a nested loop reaping with waitpid(-1) would steal its exit), and the
/// reconfigure goes on when the step ends.
#[test]
fn a_service_that_dies_during_a_step_is_respawned_meanwhile() {
    let l = Live::new(
        "live-reap",
        "    - command: [\"sh\", \"-c\", \"touch {{ root }}/step-running; while [ ! -e {{ root }}/step-go ]; do sleep 0.05; done; rm -f {{ root }}/step-running\"]\n",
    );
    l.kubelet(&pillar("one"));
    write(&l.t.root().join("step-go"), "");
    let run = l.start();
    std::fs::remove_file(l.t.root().join("step-go")).expect("rm");
    // steady's process as this test sees it (ctl status gives the pids
    // of the launcher's pid namespace).
    let launcher = run.launcher_pid();
    let steady_pids = || -> Vec<i32> {
        children_of(launcher)
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sleep\u{0}1001"))
            })
            .collect()
    };
    assert!(wait_until(APPLIED, || steady_pids().len() == 1));
    let steady = steady_pids();

    l.kubelet(&pillar("two"));
    let running = l.t.root().join("step-running");
    assert!(
        wait_until(APPLIED, || running.exists()),
        "the step never ran"
    );
    assert!(
        status(&run).contains("command-2"),
        "the step shows while it runs"
    );
    // SAFETY: kill(2) of a pid of this test's launcher.
    unsafe { kill(steady[0], 9) };
    assert!(
        wait_until(APPLIED, || l.lines("steady.pids").len() == 2),
        "steady was not respawned while the step ran\n{}",
        status(&run)
    );
    assert!(running.exists(), "the step still runs");
    assert!(l.lines("reloader.log").is_empty(), "nothing acted on yet");

    write(&l.t.root().join("step-go"), "");
    assert!(
        wait_until(APPLIED, || l.lines("reloader.log") == ["hup site=two"]),
        "{}",
        status(&run)
    );
    let st = status(&run);
    assert!(st.contains("ran: command-2"), "{st}");
    let out = run.stop();
    out.assert_code(0);
    out.assert_stderr("steady: killed by KILL; restarting");
}

/// A step past its `timeout` is stopped with its process group and fails
/// the reconfigure; the services are left as they are.
#[test]
fn a_step_past_its_timeout_is_stopped_and_nothing_is_touched() {
    let l = Live::new(
        "live-timeout",
        "    - command: [\"sh\", \"-c\", \"test -e {{ root }}/hang && exec sleep 4242; true\"]\n      timeout: 1s\n",
    );
    l.kubelet(&pillar("one"));
    let run = l.start();
    write(&l.t.root().join("hang"), "");
    l.kubelet(&pillar("two"));
    assert!(
        wait_until(APPLIED, || !pids_with_cmdline("sleep 4242").is_empty()),
        "the step never ran"
    );
    assert!(
        wait_until(Duration::from_secs(6), || status(&run)
            .contains("reconfigure: failed")),
        "{}",
        status(&run)
    );
    let st = status(&run);
    assert!(st.contains("command-2: timed out after 1"), "{st}");
    assert!(
        pids_with_cmdline("sleep 4242").is_empty(),
        "the step's group was stopped"
    );
    assert!(l.lines("reloader.log").is_empty());
    assert_eq!(l.lines("restarter.pids").len(), 1);
    run.stop().assert_code(0);
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// A real `salt` step in a live reconfigure: salt-call runs as a child of
/// the running launcher when the pillar changed, sees the new pillar, and
/// the services are acted on only after it succeeded.
#[test]
fn a_salt_step_runs_live_with_the_new_pillar_before_the_services_are_touched() {
    let l = Live::new(
        "live-salt",
        "    - salt: [demo.200_reconfigure]\n      config_dir: \"{{ root }}/etc/salt\"\n      timeout: 2m\n",
    );
    common::salt::salt_tree(l.t.root(), &l.t.project());
    let site = l.t.root().join("site.txt");
    write(
        &l.t.project().join(".salt/200_reconfigure.sls"),
        &common::salt::site_state(&site),
    );
    l.kubelet(&pillar("one"));
    let path = common::salt::path_with_salt();
    let run = l.start_with(l.t.launch(&[]).env("PATH", &path), Duration::from_secs(180));
    let read = || std::fs::read_to_string(&site).unwrap_or_default();
    assert_eq!(read().trim(), "site=one", "salt ran in the prepare phase");

    l.kubelet(&pillar("two"));
    // Salt takes seconds: a hang guard, not a bound.
    assert!(
        wait_until(Duration::from_secs(120), || !l
            .lines("reloader.log")
            .is_empty()),
        "{}",
        status(&run)
    );
    assert_eq!(
        read().trim(),
        "site=two",
        "salt had run with the new pillar before the reload"
    );
    assert_eq!(l.lines("reloader.log"), ["hup site=two"]);
    let st = status(&run);
    assert!(st.contains("ran: salt-2"), "{st}");
    let out = run.stop();
    out.assert_code(0);
    assert!(
        out.stdout.contains("salt-2 | "),
        "salt's output is prefixed\n{}",
        out.all()
    );
}

/// The volume stays hostile input while running: an override swapped to a
/// link out of the volume, or to a FIFO, is refused without blocking the
/// loop (`ctl status` answers) and changes nothing; a template made to
/// loop forever runs out of fuel (the inline part is bounded) and fails.
#[test]
fn hostile_live_inputs_are_refused_without_blocking_the_loop() {
    let l = Live::new("live-hostile", "");
    l.kubelet(&pillar("one"));
    let run = l.start();
    let cm = l.configmap();
    let init = std::fs::read_to_string(l.t.pillar()).expect("init.sls");
    let payload = std::fs::read_link(cm.join("..data")).expect("..data");

    // `..data` swapped to a directory outside the volume.
    let outside = l.t.root().join("outside");
    write(&outside.join("pillar.sls"), &pillar("stolen"));
    std::os::unix::fs::symlink(&outside, cm.join("..data_tmp")).expect("ln");
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).expect("mv");
    wait_status(&run, "reconfigure: invalid");
    assert!(
        status(&run).contains("outside the volume"),
        "{}",
        status(&run)
    );
    assert_eq!(std::fs::read_to_string(l.t.pillar()).expect("init"), init);

    // A FIFO where the file should be: never opened for a blocking read.
    let fifo_dir = cm.join("..fifo");
    std::fs::create_dir_all(&fifo_dir).expect("mkdir");
    let st = std::process::Command::new("mkfifo")
        .arg(fifo_dir.join("pillar.sls"))
        .status()
        .expect("mkfifo");
    assert!(st.success());
    std::os::unix::fs::symlink("..fifo", cm.join("..data_tmp")).expect("ln");
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).expect("mv");
    wait_status(&run, "not a regular file");
    assert_eq!(std::fs::read_to_string(l.t.pillar()).expect("init"), init);
    assert!(l.lines("reloader.log").is_empty(), "nothing touched");

    // Back to the real payload (the kubelet writer would read the FIFO),
    // then an update, then a template that would never end.
    std::os::unix::fs::symlink(&payload, cm.join("..data_tmp")).expect("ln");
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).expect("mv");
    std::fs::remove_dir_all(&fifo_dir).expect("rm");
    l.kubelet(&pillar("two"));
    assert!(wait_until(APPLIED, || l.lines("reloader.log").len() == 1));
    write(
        &l.t.project().join(".salt/files/app.conf.j2"),
        "{% for x in range(100000) %}{% for y in range(100000) %}{% endfor %}{% endfor %}\n",
    );
    wait_status(&run, "reconfigure: failed");
    assert!(status(&run).contains("out of fuel"), "{}", status(&run));
    assert_eq!(l.app_conf(), "site=two\n", "the last good rendering stays");
    assert_eq!(l.lines("reloader.log").len(), 1);
    run.stop().assert_code(0);
}

/// All or nothing (README "Live reconfigure"): a valid YAML pillar of the
/// wrong shape for the template is not installed — init.sls, the rendered
/// file and the services stay as they were, one error record says why —
/// and the next good one is applied. A refused reload (SIGHUP) is one
/// record too.
#[test]
fn a_pillar_of_the_wrong_shape_changes_nothing_and_a_refused_reload_is_one_record() {
    let l = Live::new("live-shape", "");
    l.kubelet(&pillar("one"));
    let run = l.start();
    let init = std::fs::read_to_string(l.t.pillar()).expect("init.sls");
    assert_eq!(l.app_conf(), "site=one\n");
    // `data` a string: valid YAML, a mapping at the top, but the template
    // reads `data.site`.
    l.kubelet("makina-projects.demo:\n  data: just-a-string\n");
    wait_status(&run, "reconfigure: invalid");
    let st = status(&run);
    assert!(st.contains("not installed"), "{st}");
    assert_eq!(
        std::fs::read_to_string(l.t.pillar()).expect("init.sls"),
        init,
        "the pillar is not installed"
    );
    assert_eq!(l.app_conf(), "site=one\n");
    assert!(l.lines("reloader.log").is_empty(), "nothing touched");
    // The next good pillar is applied.
    l.kubelet(&pillar("two"));
    assert!(
        wait_until(APPLIED, || l.lines("reloader.log").len() == 1),
        "{}",
        status(&run)
    );
    assert_eq!(l.app_conf(), "site=two\n");
    // A config with two errors, refused by SIGHUP.
    let cfg = l.t.config();
    let good = std::fs::read_to_string(&cfg).expect("config");
    let bad = good.replace(
        "reconfigure:\n  watch: true\n",
        "reconfigure:\n  watch: false\n",
    ) + "bogus: 1\nworse: 2\n";
    write(&cfg, &bad);
    run.signal(1);
    // Then `ctl reload`: its answer comes after the HUP was handled (the
    // signal was pending first).
    let reply = ctl(&run, &["reload"]);
    assert_ne!(reply.code, Some(0), "{}{}", reply.stdout, reply.stderr);
    let out = run.stop();
    out.assert_code(0);
    let invalid: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("reconfigure: invalid input"))
        .collect();
    assert!(
        invalid
            .first()
            .is_some_and(|l| l.contains("not installed") && l.contains("configmap/pillar.sls")),
        "{}",
        out.all()
    );
    // SIGHUP and `ctl reload`: one record each, both errors in it.
    let refused: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("reload refused") || l.contains("SIGHUP") || l.starts_with("  "))
        .collect();
    assert_eq!(refused.len(), 2, "{}", out.all());
    for r in refused {
        assert!(
            r.starts_with("mc-launcher: error: reload refused, nothing changed: ")
                && r.contains("`bogus`")
                && r.contains("`worse`"),
            "{}",
            out.all()
        );
    }
}
