//! The SSH step as an operator meets it (README "SSH keys"): not running
//! as root it is skipped with one line, whatever the key directories hold;
//! host keys are made only when the launcher's sshd starts, and said in one
//! line, once; the README's recipe ends the open session of a revoked key.

mod common;
use common::tree::{keypair, ssh_login, Tree};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// The launcher's lines about SSH (`ssh:` and `sshd:`), without its prefix.
fn ssh_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("mc-launcher: "))
        .filter(|l| {
            let l = l.strip_prefix("warning: ").unwrap_or(l);
            let l = l.strip_prefix("error: ").unwrap_or(l);
            l.starts_with("ssh:") || l.starts_with("sshd:")
        })
        .map(str::to_string)
        .collect()
}

/// The Kubernetes non-root overlay or `docker run --user 1000`: keys for
/// root in the volume (one of them a Secret's root-only file the user
/// cannot even read), `sshd: auto`. One warning, nothing read, no error,
/// no "check the owner and mode", no sshd line; the container starts.
#[test]
fn not_root_the_step_is_one_line() {
    let t = Tree::default_socket("ssh-nonroot", "");
    let (_, key) = keypair(&t.d.join("keys"), "op");
    let ssh = t.volume().join("ssh");
    write(&ssh.join("op.pub"), &format!("{key}\n"));
    write(&ssh.join("secret.pub"), &format!("{key}\n"));
    std::fs::set_permissions(
        ssh.join("secret.pub"),
        std::fs::Permissions::from_mode(0o400),
    )
    .expect("chmod");
    // The volume and the tree are the user's; the Secret's file stays root's.
    t.give_to_nobody();
    std::os::unix::fs::chown(ssh.join("secret.pub"), Some(0), Some(0)).expect("chown");
    let out = t.launch_as_nobody(&["--", "true"]).run();
    out.assert_code(0);
    assert_eq!(
        ssh_lines(&out.stderr),
        ["warning: ssh: skipped, not running as root"],
        "{}",
        out.all()
    );
    for bad in ["error:", "check the owner", "host key"] {
        assert!(!out.stderr.contains(bad), "{bad:?} in\n{}", out.all());
    }
    assert!(
        !t.volume().join("configuration/ssh_host_keys").exists(),
        "{}",
        out.all()
    );
    // `check` run the same way says the same: no key read, none refused.
    let out = t.launch_as_nobody(&["check"]).run();
    let all = out.all();
    assert!(
        all.contains("ssh          skipped, not running as root"),
        "{all}"
    );
    for bad in ["keys of root", "secret.pub", "check the owner"] {
        assert!(!all.contains(bad), "{bad:?} in\n{all}");
    }
}

/// Not root, but `ssh.user` is the user the launcher runs as (the demo):
/// its own keys are installed; `sshd: auto` without a key says nothing of
/// sshd (it would not run anyway).
#[test]
fn not_root_its_own_keys_work_and_an_idle_sshd_is_not_mentioned() {
    let home = "{{ root }}/home";
    let t = Tree::default_socket(
        "ssh-self",
        &format!("ssh:\n  user: nobody\n  home: \"{home}\"\n  sshd: auto\n"),
    );
    std::fs::create_dir_all(t.d.join("home")).expect("home");
    t.give_to_nobody();
    let launch = || t.launch_as_nobody(&["--", "true"]);
    let out = launch().run();
    out.assert_code(0);
    let lines = ssh_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", out.all());
    assert!(lines[0].starts_with("ssh: no keys in "), "{}", out.all());
    // With a key: installed, and sshd (which would run) is said skipped.
    let (_, key) = keypair(&t.d.join("keys"), "op");
    write(&t.volume().join("ssh/op.pub"), &format!("{key}\n"));
    std::os::unix::fs::chown(t.volume().join("ssh/op.pub"), Some(65534), Some(65534))
        .expect("chown");
    let out = launch().run();
    out.assert_code(0);
    assert_eq!(
        ssh_lines(&out.stderr),
        [
            format!(
                "ssh: installed 1 key(s) in {}/home/.ssh/authorized_keys",
                t.root().display()
            ),
            "warning: sshd: skipped, not running as root (sshd needs root to switch to the logged-in user)".to_string(),
        ],
        "{}",
        out.all()
    );
}

/// A fresh container as root with `sshd: auto` and no key: no host key is
/// made (no sshd runs). The first key dropped while running starts sshd,
/// and the host keys are made then, said in one line; a second key, or a
/// volume that cannot keep them (their directory a planted link), makes
/// none again.
#[test]
fn host_keys_are_made_once_when_sshd_first_starts() {
    for planted in [false, true] {
        let t = Tree::default_socket(if planted { "hk-link" } else { "hk" }, "");
        let hk = t.volume().join("configuration/ssh_host_keys");
        if planted {
            std::fs::create_dir_all(t.d.join("elsewhere")).expect("mkdir");
            std::fs::create_dir_all(t.volume().join("configuration")).expect("mkdir");
            std::os::unix::fs::symlink(t.d.join("elsewhere"), &hk).expect("link");
        }
        let keys = t.d.join("keys");
        let (_, one) = keypair(&keys, "one");
        let (_, two) = keypair(&keys, "two");
        write(&keys.join("one.line"), &format!("{one}\n"));
        write(&keys.join("two.line"), &format!("{two}\n"));
        let port = free_port();
        let vol = t.volume().display().to_string();
        let state = t.state().display().to_string();
        // The main command drops a key, waits for sshd's host keys (the
        // state copy sshd reads), then a second key until it is installed.
        let script = format!(
            r#"mkdir -p {vol}/ssh
cp {k}/one.line {vol}/ssh/one.pub
i=0; until [ -s {state}/sshd_config ] || [ $i -ge 200 ]; do sleep 0.05; i=$((i+1)); done
cp {k}/two.line {vol}/ssh/two.pub
i=0; until grep -q ' two$' /root/.ssh/authorized_keys 2>/dev/null || [ $i -ge 200 ]; do sleep 0.05; i=$((i+1)); done
grep -c ssh-ed25519 /root/.ssh/authorized_keys"#,
            k = keys.display()
        );
        let out = t
            .launch(&["--", "sh", "-c", &script])
            .tmpfs("/etc/ssh")
            .before(&format!(
                "printf 'Port {port}\\nListenAddress 127.0.0.1\\n' > /etc/ssh/sshd_config"
            ))
            .timeout(Duration::from_secs(30))
            .run();
        out.assert_code(0);
        assert_eq!(out.stdout.trim(), "2", "{}", out.all());
        let lines = ssh_lines(&out.stderr);
        let at = |part: &str| lines.iter().position(|l| l.contains(part));
        let generated: Vec<&String> = lines.iter().filter(|l| l.contains("generated")).collect();
        let kept_in = if planted {
            t.state().join("ssh_host_keys")
        } else {
            hk.clone()
        };
        assert_eq!(
            generated,
            [&format!(
                "sshd: generated host keys (ed25519, ecdsa) in {}",
                kept_in.display()
            )],
            "{}",
            out.all()
        );
        // The volume that cannot keep them is said once, with the keys made.
        let not_kept = lines
            .iter()
            .filter(|l| l.contains("host keys are kept in"))
            .count();
        assert_eq!(not_kept, usize::from(planted), "{}", out.all());
        let (Some(none), Some(made), Some(start)) = (
            at("ssh: no keys in"),
            at("generated host keys"),
            at("sshd: starting (a valid key is installed)"),
        ) else {
            panic!("missing lines in\n{}", out.all());
        };
        assert!(none < made && made < start, "{}", out.all());
        assert_eq!(
            hk.join("ssh_host_ed25519_key.pub").exists(),
            !planted,
            "{}",
            out.all()
        );
        assert!(
            std::fs::read_dir(t.d.join("elsewhere"))
                .map(|d| d.count() == 0)
                .unwrap_or(true),
            "nothing written through the link"
        );
    }
}

/// Without a key and without sshd running, the start makes no host key.
#[test]
fn no_sshd_no_host_keys() {
    let t = Tree::default_socket("hk-none", "");
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(0);
    let lines = ssh_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{}", out.all());
    assert!(lines[0].starts_with("ssh: no keys in "), "{}", out.all());
    assert!(
        !t.volume().join("configuration/ssh_host_keys").exists(),
        "{}",
        out.all()
    );
    assert!(!t.state().join("ssh_host_keys").exists(), "{}", out.all());
}

/// README "Add or revoke an SSH key": a revoked key logs in no more, but
/// its open session stays, through `ctl restart sshd` and a HUP too; the
/// README's `pkill` ends it and leaves the listener serving the other key.
#[test]
fn a_revoked_keys_session_ends_with_the_readme_command() {
    let readme = std::fs::read_to_string(repo().join("README.rst")).expect("README");
    let pkill = readme
        .lines()
        .find_map(|l| l.trim().strip_prefix("docker exec C "))
        .filter(|c| c.starts_with("pkill"))
        .expect("the README's pkill command");
    let t = Tree::new("revoke", "ssh:\n  sshd: always\n");
    let keys = t.d.join("keys");
    let (alice, alice_pub) = keypair(&keys, "alice");
    let (bob, bob_pub) = keypair(&keys, "bob");
    write(&t.volume().join("ssh/alice.pub"), &format!("{alice_pub}\n"));
    write(&t.volume().join("ssh/bob.pub"), &format!("{bob_pub}\n"));
    let port = free_port();
    let ctl = format!("{} -c {} ctl", bin().display(), t.config().display());
    let script = format!(
        r#"i=0; until {b} true >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
{a} 'echo in; sleep 60' > {out} 2>&1 &
cli=$!
i=0; until grep -q in {out} || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
rm {vol}/ssh/alice.pub
i=0; while grep -q alice /root/.ssh/authorized_keys && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo new-login=$({a} echo yes 2>/dev/null; echo rc=$?)
{ctl} restart sshd >/dev/null && {ctl} signal sshd HUP >/dev/null
i=0; until {b} true >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
kill -0 $cli && echo still-open
{pkill}; echo pkill=$?
wait $cli; echo client-ended
echo bob=$({b} echo yes 2>/dev/null)"#,
        a = ssh_login(port, &alice),
        b = ssh_login(port, &bob),
        vol = t.volume().display(),
        out = t.d.join("alice.out").display(),
    );
    let out = t.launch_with_sshd(port, &script).run();
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "new-login=rc=255\nstill-open\npkill=0\nclient-ended\nbob=yes\n",
        "{}",
        out.all()
    );
}
