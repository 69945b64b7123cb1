//! The prepare phase from the data volume (README "The prepare phase"): pillar override, SSH
//! keys, prepopulate. The launcher runs as PID 1 in a temp root; SSH tests
//! hide /root behind a tmpfs so the host's keys are never touched.

mod common;
use common::tree::{keypair, ssh_login, Tree, IMAGE_PILLAR};
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[test]
fn pillar_override_is_installed_then_restored() {
    let t = Tree::new("pillar", "");
    let over = "makina-projects.demo:\n  data:\n    site: from-volume\n";
    write(&t.source(), over);
    let out = t.prepare();
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(t.pillar()).expect("pillar"), over);
    assert_eq!(
        std::fs::read_to_string(t.root().join("state/image-pillar.sls")).expect("saved"),
        IMAGE_PILLAR
    );
    out.assert_stderr("pillar: installed the override");
    // The override goes away: the image default comes back.
    std::fs::remove_file(t.source()).expect("rm");
    let out = t.prepare();
    out.assert_code(0);
    t.assert_image_pillar();
    out.assert_stderr("image default is back");
}

#[test]
fn salt_jinja_pillar_is_accepted() {
    let t = Tree::new("saltjinja", "");
    let over = "#!jinja|yaml\n{% set pw = salt['mc_utils.generate_password']() %}\nmakina-projects.demo:\n  data:\n    password: {{ pw }}\n{% if grains['os'] == 'Debian' %}\n    os: debian\n{% endif %}\n";
    write(&t.source(), over);
    let out = t.prepare();
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(t.pillar()).expect("pillar"),
        over,
        "installed as written: salt renders it"
    );
}

#[test]
fn invalid_pillar_keeps_the_default_and_names_the_line() {
    let t = Tree::new("badpillar", "");
    write(&t.source(), "makina-projects.demo:\n  data: [1, 2\n");
    let before = std::fs::read(t.pillar()).expect("pillar");
    let out = t.launch(&["--", "true"]).run();
    out.assert_code(78);
    out.assert_stderr("configuration/pillar.sls:2:9: YAML syntax error");
    assert_eq!(
        std::fs::read(t.pillar()).expect("pillar"),
        before,
        "the image default is untouched"
    );
    // keep-default: a warning, and the container starts.
    let t2 = Tree::new("keepdefault", "pillar:\n  on_invalid: keep-default\n");
    write(
        &t2.volume().join("configuration/pillar.sls"),
        "- not\n- a mapping\n",
    );
    let out = t2.launch(&["--", "sh", "-c", "exit 5"]).run();
    out.assert_code(5);
    out.assert_stderr("must be a mapping");
    out.assert_stderr("keep-default");
    assert_eq!(
        std::fs::read_to_string(t2.pillar()).expect("pillar"),
        IMAGE_PILLAR
    );
    // check reports it too, and writes nothing.
    let out = t.launch(&["check"]).not_pid1().run();
    out.assert_code(78);
    out.assert_stderr("pillar.sls:2:9");
}

#[test]
fn kubernetes_configmap_links_are_followed_escapes_refused() {
    let t = Tree::new("k8s", "");
    let conf = t.volume().join("configuration");
    std::fs::create_dir_all(conf.join("..2024_01_01_00_00_00.1")).expect("mkdir");
    write(
        &conf.join("..2024_01_01_00_00_00.1/pillar.sls"),
        "makina-projects.demo: {data: {site: configmap}}\n",
    );
    std::os::unix::fs::symlink("..2024_01_01_00_00_00.1", conf.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/pillar.sls", conf.join("pillar.sls")).expect("link");
    let out = t.prepare();
    out.assert_code(0);
    assert!(std::fs::read_to_string(t.pillar())
        .expect("pillar")
        .contains("configmap"));

    let t = Tree::new("escape", "");
    let secret = t.root().join("outside-secret.sls");
    write(&secret, "stolen: true\n");
    std::fs::create_dir_all(t.volume().join("configuration")).expect("mkdir");
    std::os::unix::fs::symlink(&secret, t.source()).expect("link");
    let out = t.prepare();
    out.assert_code(78);
    out.assert_stderr("outside the volume");
    t.assert_image_pillar();
}

#[test]
fn ssh_keys_go_into_a_managed_block() {
    let t = Tree::new("keys", "ssh:\n  sshd: never\n");
    let keys = t.d.join("keys");
    let (_, alice) = keypair(&keys, "alice");
    let (_, bob) = keypair(&keys, "bob");
    let (bad_private, _) = keypair(&keys, "mallory");
    let ssh = t.volume().join("ssh");
    write(&ssh.join("alice.pub"), &format!("{alice}\n"));
    write(
        &ssh.join("bob.pub"),
        &format!("# team key\n{bob}\nthis is not a key\n"),
    );
    std::fs::copy(&bad_private, ssh.join("id_ed25519")).expect("copy private");
    // The operator's own line, outside the managed block, must survive.
    let seed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorsOwnKeyOperatorsOwnKey0000 operator\n";
    let show = format!(
        "mkdir -p /root/.ssh && printf '%s' '{seed}' > /root/.ssh/authorized_keys && {} -c {} prepare; echo rc=$?; cat /root/.ssh/authorized_keys; stat -c '%a %U' /root/.ssh /root/.ssh/authorized_keys",
        bin().display(),
        t.d.join("projects/demo/project/.salt/mc-launcher.yml").display()
    );
    let out = Launch::new(&["--", "sh", "-c", &show]).root(t.root()).run();
    out.assert_code(0);
    let text = &out.stdout;
    assert!(text.contains("rc=0"), "{}", out.all());
    assert!(
        text.contains(&alice) && text.contains(&bob),
        "{}",
        out.all()
    );
    assert!(
        text.starts_with(&format!("rc=0\n{seed}")),
        "the operator's line is kept first\n{}",
        out.all()
    );
    assert!(text.contains("700 root\n600 root"), "{}", out.all());
    assert!(!text.contains("PRIVATE"), "{}", out.all());
    // the bad line is named
    out.assert_stderr("bob.pub:3:1");
    out.assert_stderr("id_ed25519: refused: this is a PRIVATE key");
    // A key removed from the volume disappears from the block.
    std::fs::remove_file(ssh.join("bob.pub")).expect("rm");
    let show2 = format!(
        "mkdir -p /root/.ssh && {} -q -c {} prepare; cat /root/.ssh/authorized_keys",
        bin().display(),
        t.d.join("projects/demo/project/.salt/mc-launcher.yml")
            .display()
    );
    let out = Launch::new(&["--", "sh", "-c", &show2])
        .root(t.root())
        .run();
    assert!(
        out.stdout.contains(&alice) && !out.stdout.contains(&bob),
        "{}",
        out.all()
    );
}

/// Compare two trees: same entries, types, modes, contents, link targets.
fn same_tree(a: &Path, b: &Path) -> Result<usize, String> {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).map_err(|e| format!("{}: {e}", pa.display()))?,
            std::fs::symlink_metadata(&pb).map_err(|e| format!("{}: {e}", pb.display()))?,
        );
        if ma.file_type() != mb.file_type()
            || (!ma.file_type().is_symlink() && ma.mode() != mb.mode())
        {
            return Err(format!("{}: type or mode differs", rel.display()));
        }
        n += 1;
        if ma.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&pa)
                .map_err(|e| e.to_string())?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            let count_b = std::fs::read_dir(&pb).map_err(|e| e.to_string())?.count();
            if names.len() != count_b {
                return Err(format!(
                    "{}: {} entries vs {count_b}",
                    rel.display(),
                    names.len()
                ));
            }
            names.sort();
            stack.extend(names.into_iter().map(|nm| rel.join(nm)));
        } else if ma.file_type().is_symlink() {
            if std::fs::read_link(&pa).ok() != std::fs::read_link(&pb).ok() {
                return Err(format!("{}: link target differs", rel.display()));
            }
        } else if std::fs::read(&pa).ok() != std::fs::read(&pb).ok() {
            return Err(format!("{}: content differs", rel.display()));
        }
    }
    Ok(n)
}

fn source_tree(root: &Path, files: usize, size: usize) -> PathBuf {
    let src = root.join("projects/demo/project/.salt/files/default-data");
    for i in 0..files {
        let p = src.join(format!("d{}/f{i}.dat", i % 17));
        let body: Vec<u8> = (0..size).map(|j| ((i * 31 + j) % 251) as u8).collect();
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(&p, body).expect("write");
    }
    std::os::unix::fs::symlink("d1/f1.dat", src.join("link")).expect("link");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("d2"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod");
    src
}

const PREPOP: &str = "prepopulate:\n  - src: \"{{ paths.project }}/.salt/files/default-data\"\n    dest: \"{{ paths.volume }}/data\"\n";

#[test]
fn prepopulate_fills_only_empty_destinations() {
    let t = Tree::new("prepop", PREPOP);
    let src = source_tree(t.root(), 50, 100);
    let dest = t.volume().join("data");
    // lost+found alone counts as empty.
    std::fs::create_dir_all(dest.join("lost+found")).expect("mkdir");
    let out = t.prepare();
    out.assert_code(0);
    std::fs::remove_dir(dest.join("lost+found")).expect("rm");
    same_tree(&src, &dest).expect("exact copy");
    // With data in it, the destination is left byte for byte.
    std::fs::write(dest.join("d1/f1.dat"), "the operator's data").expect("write");
    std::fs::remove_file(dest.join("d3/f3.dat")).expect("rm");
    let out = t.prepare();
    out.assert_code(0);
    out.assert_stderr("holds data: left as it is");
    assert_eq!(
        std::fs::read_to_string(dest.join("d1/f1.dat")).expect("read"),
        "the operator's data"
    );
    assert!(!dest.join("d3/f3.dat").exists());
}

#[test]
fn prepopulate_survives_kill_9_mid_copy() {
    let t = Tree::new("kill9", PREPOP);
    let src = source_tree(t.root(), 3000, 4096);
    let dest = t.volume().join("data");
    let mut interrupted = 0;
    let marker = dest.join(".mc-launcher-prepopulate-incomplete");
    // Killed at several points of the copy: synced on the copy's own
    // marker (a loaded machine starts late), then a little later each time.
    for delay_ms in [0u64, 2, 5, 10, 20] {
        let _ = std::fs::remove_dir_all(&dest);
        let mut run = t.launch(&["prepare"]).spawn();
        let pid = run.launcher_pid();
        wait_until(Duration::from_secs(20), || {
            marker.exists() || !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        unsafe_kill(pid, 9);
        run.kill_all();
        let _ = run.child.wait();
        if marker.exists() {
            interrupted += 1;
        } else if dest.exists() && std::fs::read_dir(&dest).map(|r| r.count()).unwrap_or(0) > 0 {
            same_tree(&src, &dest).expect("no marker: the copy must be complete");
        }
        // The next start finishes the job: a complete, exact copy.
        let out = t.prepare();
        out.assert_code(0);
        same_tree(&src, &dest)
            .unwrap_or_else(|e| panic!("after kill at {delay_ms}ms: {e}\n{}", out.all()));
    }
    assert!(
        interrupted > 0,
        "no kill landed during a copy: the test proved nothing"
    );
}

fn unsafe_kill(pid: i32, sig: i32) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

#[test]
fn prepopulate_on_a_full_filesystem_fails_cleanly() {
    let t = Tree::new("full", PREPOP);
    source_tree(t.root(), 40, 64 * 1024);
    let dest = t.volume().join("data");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let out = t
        .launch(&["prepare"])
        .tmpfs_sized(&dest, "1m")
        .after(&format!("echo entries=$(ls -A {} | wc -l)", dest.display()))
        .run();
    out.assert_code(1);
    out.assert_stderr("the filesystem is full");
    // the path is named
    out.assert_stderr(&dest.display().to_string());
    // nothing half-copied is left
    out.assert_stdout("entries=0");
}

#[test]
fn skip_steps_and_original_arguments() {
    let t = Tree::new("skip", PREPOP);
    source_tree(t.root(), 3, 10);
    write(&t.source(), "makina-projects.demo: {data: {site: v}}\n");
    let out = t.launch(&["--skip", "pillar,prepopulate", "prepare"]).run();
    out.assert_code(0);
    t.assert_image_pillar();
    assert!(!t.volume().join("data").exists());
    let out = t.launch(&["prepare"]).env("MC_SKIP", "prepopulate").run();
    out.assert_code(0);
    assert!(std::fs::read_to_string(t.pillar())
        .expect("pillar")
        .contains("site: v"));
    assert!(!t.volume().join("data").exists());
}

#[test]
fn real_ssh_login_with_a_volume_key_and_live_key_changes() {
    let t = Tree::new("sshd", "ssh:\n  sshd: always\n");
    let keys = t.d.join("keys");
    let (good, good_pub) = keypair(&keys, "good");
    let (late, late_pub) = keypair(&keys, "late");
    let (stranger, _) = keypair(&keys, "stranger");
    write(&t.volume().join("ssh/good.pub"), &format!("{good_pub}\n"));
    let port = free_port();
    let ssh = |key: &Path| format!("{} echo logged-in-as-$(id -un)", ssh_login(port, key));
    let script = format!(
        r#"i=0; until {ok} >/dev/null 2>&1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
echo good=$({ok} 2>/dev/null)
echo stranger=$({bad} 2>/dev/null; echo rc=$?)
echo late-before=$({late} 2>/dev/null; echo rc=$?)
cp {late_pub_file} {vol}/ssh/late.pub
i=0; until grep -q late /root/.ssh/authorized_keys || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done
echo late-after=$({late} 2>/dev/null)
rm {vol}/ssh/good.pub
i=0; while grep -q ' good$' /root/.ssh/authorized_keys && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo good-removed=$({ok} 2>/dev/null; echo rc=$?)
cat {vol}/configuration/ssh_host_keys/ssh_host_ed25519_key.pub"#,
        ok = ssh(&good),
        bad = ssh(&stranger),
        late = ssh(&late),
        late_pub_file = late.with_extension("pub").display(),
        vol = t.volume().display(),
    );
    let _ = late_pub;
    let launch = |script: &str| t.launch_with_sshd(port, script);
    let out = launch(&script).run();
    out.assert_stderr(&format!("sshd ! Server listening on 127.0.0.1 port {port}"));
    out.assert_code(0);
    out.assert_stdout("good=logged-in-as-root");
    // an unknown key is refused
    out.assert_stdout("stranger=rc=255");
    out.assert_stdout("late-before=rc=255");
    // a key added while running works
    out.assert_stdout("late-after=logged-in-as-root");
    // a removed key stops working
    out.assert_stdout("good-removed=rc=255");
    out.assert_stderr("summary: sshd: stopped in");
    // Host keys persist in the volume: the same key after a restart.
    let host_key = std::fs::read_to_string(
        t.volume()
            .join("configuration/ssh_host_keys/ssh_host_ed25519_key.pub"),
    )
    .expect("host key");
    let out = launch(&format!(
        "cat {}/configuration/ssh_host_keys/ssh_host_ed25519_key.pub",
        t.volume().display()
    ))
    .run();
    out.assert_code(0);
    assert_eq!(out.stdout, host_key, "host keys are reused");
}
