//! The data volume is hostile (issue 15): whoever writes it — the
//! application, a shared host directory, a Kubernetes volume — plants links
//! and FIFOs, flips them during an operation, or drops huge files. Each test
//! follows one attack and checks that nothing outside the volume changed and
//! that the launcher still behaves. Named after the issue item it proves.
//!
//! Every test runs the real binary in a private mount namespace (tmpfs over
//! /run and /root); nothing of the host's /srv, /root or /etc is touched.

mod common;
use base64::Engine;
use common::tree::{Tree, IMAGE_PILLAR};
use common::*;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A makina tree (see tests/common/tree.rs) with `outside/`: what the
/// attacker aims at, next to the volume, and a home directory; `@HOME@` in
/// `config` stands for that home.
fn tree(tag: &str, config: &str) -> Tree {
    let dummy = Tree::default_socket(&format!("hostile-{tag}"), "");
    let config = config.replace("@HOME@", &dummy.home().to_string_lossy());
    write(
        &dummy.config(),
        &format!("paths:\n  state: \"{{{{ root }}}}/state\"\n{config}"),
    );
    std::fs::create_dir_all(dummy.outside()).expect("outside");
    std::fs::create_dir_all(dummy.home()).expect("home");
    dummy
}

impl Tree {
    fn outside(&self) -> PathBuf {
        self.d.join("outside")
    }
    fn home(&self) -> PathBuf {
        self.d.join("home")
    }
}

/// Keys for a user with `@HOME@` as home, no sshd, one service.
const KEYS_AND_A_SERVICE: &str =
    "ssh:\n  home: \"@HOME@\"\n  sshd: never\nservices:\n  s:\n    cmd: [sleep, \"1000\"]\n";

/// A well-formed public key line (the blob embeds its type) with a
/// distinct body for each `n`.
fn key(n: u64, comment: &str) -> String {
    let kind = "ssh-ed25519";
    let mut blob = (kind.len() as u32).to_be_bytes().to_vec();
    blob.extend_from_slice(kind.as_bytes());
    blob.extend_from_slice(&32u32.to_be_bytes());
    let mut body = [0u8; 32];
    for (i, b) in body.iter_mut().enumerate() {
        *b = (n.wrapping_mul(2654435761).wrapping_add(i as u64 * 97) >> (i % 8)) as u8;
    }
    body[..8].copy_from_slice(&n.to_be_bytes());
    blob.extend_from_slice(&body);
    format!(
        "{kind} {} {comment}",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// Every path under `dir` (recursively), for "nothing changed" checks.
fn listing(dir: &Path) -> Vec<(PathBuf, u32, u32, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let md = std::fs::symlink_metadata(e.path()).expect("md");
            out.push((e.path(), md.uid(), md.mode(), md.len()));
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Replace `path` atomically with a fresh FIFO.
fn put_fifo(path: &Path) {
    let tmp = path.with_extension("tmp-fifo");
    let _ = std::fs::remove_file(&tmp);
    nix::unistd::mkfifo(&tmp, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    std::fs::rename(&tmp, path).expect("rename");
}

/// `c0/c1/…/c59`: a deep chain of directories, so that resolving a path
/// through it takes long enough for a swap to land in between.
fn chain() -> PathBuf {
    (0..60).map(|i| format!("c{i}")).collect()
}

/// Swap two directory entries atomically (renameat2 RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) {
    let _ = nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    );
}

/// A thread that runs `flip` over and over until dropped.
struct Flipper {
    stop: Arc<AtomicBool>,
    flips: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Flipper {
    /// Exchange `a` and `b` (RENAME_EXCHANGE) over and over.
    fn exchanging(a: PathBuf, b: PathBuf) -> Flipper {
        Flipper::start(move |_| exchange(&a, &b))
    }
    fn start(mut flip: impl FnMut(u64) + Send + 'static) -> Flipper {
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(AtomicU64::new(0));
        let (s, f) = (stop.clone(), flips.clone());
        let handle = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                flip(i);
                i += 1;
                f.store(i, Ordering::Relaxed);
            }
        });
        Flipper {
            stop,
            flips,
            handle: Some(handle),
        }
    }
    fn flips(&self) -> u64 {
        self.flips.load(Ordering::Relaxed)
    }
    /// Stop flipping, having flipped at least once.
    #[track_caller]
    fn stop(self) {
        assert!(self.flips() > 0, "the flipper never ran");
    }
}

impl Drop for Flipper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ----- SSH keys ---------------------------------------------------------------

/// Item 1: for a non-root `ssh.user`, `~/.ssh` or `authorized_keys` made a
/// link (to a root-only directory or file) is refused with a clear message:
/// never chowned to the user, never written or read through.
#[test]
fn item01_non_root_user_ssh_dir_symlink_is_refused() {
    let passwd_line = "mcltest:x:4242:4242:mc-launcher test:/nonexistent:/bin/sh";
    for planted in ["dir", "file"] {
        let t = tree(
            &format!("item01-{planted}"),
            "ssh:\n  user: mcltest\n  home: \"@HOME@\"\n  sshd: never\n",
        );
        write(
            &t.volume().join("ssh/a.pub"),
            &format!("{}\n", key(1, "alice")),
        );
        let home = t.home();
        nix::unistd::chown(&home, Some(4242.into()), Some(4242.into())).expect("chown home");
        // Root-only things the user must never get.
        let secret_dir = t.outside().join("root-only");
        std::fs::create_dir_all(&secret_dir).expect("secret dir");
        std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let secret = secret_dir.join("shadow");
        std::fs::write(&secret, "root:TOP-SECRET-HASH:19000::::::\n").expect("secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        match planted {
            "dir" => symlink(&secret_dir, home.join(".ssh")).expect("link"),
            _ => {
                std::fs::create_dir_all(home.join(".ssh")).expect("ssh dir");
                nix::unistd::chown(&home.join(".ssh"), Some(4242.into()), Some(4242.into()))
                    .expect("chown");
                symlink(&secret, home.join(".ssh/authorized_keys")).expect("link");
            }
        }
        let before = listing(&t.outside());
        let scratch = t.d.join("etc-overlay");
        let out = t
            .launch(&["prepare"])
            .overlay("/etc", &scratch)
            .before(&format!("echo '{passwd_line}' >> /etc/passwd"))
            .run();
        let all = out.all();
        assert_eq!(
            listing(&t.outside()),
            before,
            "{planted}: outside changed\n{all}"
        );
        assert_eq!(
            std::fs::read_to_string(&secret).expect("secret"),
            "root:TOP-SECRET-HASH:19000::::::\n"
        );
        let wanted = match planted {
            "dir" => "~/.ssh is a symbolic link: refused",
            _ => "~/.ssh/authorized_keys is a symbolic link: refused",
        };
        assert!(all.contains(wanted), "{planted}: no clear refusal\n{all}");
        assert!(
            !all.contains("TOP-SECRET"),
            "{planted}: the secret leaked\n{all}"
        );
        // Nothing in the home holds the secret either.
        for (p, ..) in listing(&home) {
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                assert!(!text.contains("TOP-SECRET"), "{}: {text}", p.display());
            }
        }
    }
}

/// Item 3: each `*.pub` is a link into `x/c0/…/c59/` (inside the key
/// directory), and `x` is swapped again and again with a link to the same
/// tree outside the volume, whose files are root-only: whenever a check and
/// the read are two steps, the read lands outside. The outside files are
/// never read: their lines never reach the log or authorized_keys.
#[test]
fn item03_key_file_flipped_to_an_outside_link_is_never_read() {
    let t = tree("item03", "ssh:\n  home: \"@HOME@\"\n  sshd: never\n");
    let keys = t.volume().join("ssh");
    let inside = keys.join("x").join(chain());
    let outside = t.outside().join("x").join(chain());
    std::fs::create_dir_all(&inside).expect("inside");
    std::fs::create_dir_all(&outside).expect("outside");
    for i in 0..40u64 {
        let name = format!("k{i}.pub");
        write(&inside.join(&name), &format!("{}\n", key(i, "k")));
        let secret = outside.join(&name);
        write(&secret, "TOP-SECRET-LINE one\nTOP-SECRET-LINE two\n");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        symlink(Path::new("x").join(chain()).join(&name), keys.join(&name)).expect("link");
    }
    symlink(t.outside().join("x"), keys.join("x.swap")).expect("link");
    let flipper = Flipper::exchanging(keys.join("x"), keys.join("x.swap"));
    let mut refused = 0;
    for run in 0..40 {
        let out = t
            .launch(&["prepare"])
            .timeout(Duration::from_secs(60))
            .run();
        let all = out.all();
        assert!(
            !all.contains("TOP-SECRET"),
            "run {run}: the outside file was read\n{all}"
        );
        let ak = std::fs::read_to_string(t.home().join(".ssh/authorized_keys")).unwrap_or_default();
        assert!(
            !ak.contains("TOP-SECRET"),
            "run {run}: leaked into authorized_keys"
        );
        assert_eq!(out.code, Some(0), "{all}");
        if all.contains("outside") && all.contains("refused") {
            refused += 1;
        }
    }
    flipper.stop();
    assert!(refused > 0, "no run met the link: the test proved nothing");
}

/// Item 4: a key file swapped for a FIFO between any check and the read
/// never blocks the launcher (it used to hang in open() forever); a FIFO
/// named `*.pub` is refused by type. Then, with `ssh.watch`, a running
/// launcher meets the same FIFOs, still installs a new key, answers `ctl`
/// and stops on SIGTERM.
#[test]
fn item04_key_file_swapped_for_a_fifo_never_blocks() {
    let t = tree("item04", KEYS_AND_A_SERVICE);
    // Each `*.pub` is a link into `x/c0/…/c59/`; `x` is swapped again and
    // again with `y`, the same tree of FIFOs: a check that says "regular
    // file" followed by an open by path then opens a FIFO nobody writes.
    let keys = t.volume().join("ssh");
    let (x, y) = (keys.join("x").join(chain()), keys.join("y").join(chain()));
    std::fs::create_dir_all(&x).expect("x");
    std::fs::create_dir_all(&y).expect("y");
    let files: Vec<PathBuf> = (0..40).map(|i| keys.join(format!("k{i}.pub"))).collect();
    for (i, f) in files.iter().enumerate() {
        let name = format!("k{i}.pub");
        write(&x.join(&name), &format!("{}\n", key(i as u64, "k")));
        put_fifo(&y.join(&name));
        symlink(Path::new("x").join(chain()).join(&name), f).expect("link");
    }
    {
        let flipper = Flipper::exchanging(keys.join("x"), keys.join("y"));
        for run in 0..40 {
            // A run that blocks in open() never ends: the harness's limit
            // then fails the test.
            let out = t
                .launch(&["prepare"])
                .timeout(Duration::from_secs(60))
                .run();
            assert_eq!(out.code, Some(0), "run {run}\n{}", out.all());
        }
        assert!(flipper.flips() > 0);
    }
    // The swaps stopped on either side: put the key files back in `x`.
    if std::fs::metadata(x.join("k1.pub")).is_ok_and(|m| !m.is_file()) {
        exchange(&keys.join("x"), &keys.join("y"));
    }
    // Now a running launcher with FIFOs in place.
    for f in files.iter().step_by(2) {
        put_fifo(f);
    }
    let run = t.launch(&[]).timeout(Duration::from_secs(120)).spawn();
    let ak = t.home().join(".ssh/authorized_keys");
    assert!(wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&ak).is_ok_and(|s| s.contains(" k\n"))
    }));
    write(&keys.join("late.pub"), &format!("{}\n", key(1000, "late")));
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(&ak)
            .is_ok_and(|s| s.contains(" late\n"))),
        "the key added while FIFOs sit in the key dir was never installed"
    );
    let st = ctl(&run, &["status"]);
    st.assert_code(0);
    let out = run.stop();
    out.assert_code(0);
    out.assert_stderr("k0.pub: is a FIFO, not a regular file: refused");
}

/// Item 13: a 12 MB `.pub` is refused at its size (the limit is in the
/// message) instead of being parsed, and keys repeated across many files
/// are de-duplicated (each once in authorized_keys).
#[test]
fn item13_huge_pub_is_refused_and_keys_deduplicated() {
    let t = tree("item13", "ssh:\n  home: \"@HOME@\"\n  sshd: never\n");
    let keys = t.volume().join("ssh");
    // 20 files of 1,500 keys each, every key twice overall: 15,000 unique.
    for f in 0..20u64 {
        let text: String = (0..1500u64)
            .map(|i| format!("{}\n", key((f * 1500 + i) % 15_000, "dup")))
            .collect();
        write(&keys.join(format!("team{f:02}.pub")), &text);
    }
    let huge: String = (0..150_000u64)
        .map(|i| format!("{}\n", key(i, "huge")))
        .collect();
    assert!(huge.len() > 12_000_000);
    write(&keys.join("huge.pub"), &huge);
    let out = t
        .launch(&["prepare"])
        .timeout(Duration::from_secs(120))
        .run();
    out.assert_code(0);
    out.assert_stderr("huge.pub: is larger than 256 KiB, the limit: refused");
    let ak = std::fs::read_to_string(t.home().join(".ssh/authorized_keys")).expect("ak");
    assert_eq!(ak.matches(" dup\n").count(), 15_000);
    assert!(!ak.contains(" huge\n"));
}

/// Item 14: a 1 GiB sparse file in the key directory (named `.pub` or
/// not) costs the running launcher next to no memory: only a bounded
/// prefix is ever read.
#[test]
fn item14_huge_sparse_file_in_the_key_dir_costs_no_memory() {
    let t = tree("item14", KEYS_AND_A_SERVICE);
    let keys = t.volume().join("ssh");
    std::fs::create_dir_all(&keys).expect("keys");
    for name in ["sparse.pub", "sparse-no-ext"] {
        let f = std::fs::File::create(keys.join(name)).expect("create");
        f.set_len(1 << 30).expect("sparse");
    }
    write(&keys.join("good.pub"), &format!("{}\n", key(7, "good")));
    let run = t.launch(&[]).timeout(Duration::from_secs(120)).spawn();
    let ak = t.home().join(".ssh/authorized_keys");
    assert!(wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&ak).is_ok_and(|s| s.contains(" good\n"))
    }));
    let pid = run.launcher_pid();
    let hwm_kib = peak_rss_kib(pid);
    // Supervising (not still in the prepare phase) before the stop.
    assert!(wait_until(Duration::from_secs(60), || ctl(
        &run,
        &["status"]
    )
    .code
        == Some(0)));
    let out = run.stop();
    out.assert_code(0);
    assert!(
        hwm_kib < 64 * 1024,
        "peak memory {hwm_kib} KiB: the sparse file was read whole\n{}",
        out.all()
    );
    out.assert_stderr("sparse.pub: is larger than 256 KiB");
}

/// Item 20: a rejected line is quoted at most ~100 bytes in the warning.
#[test]
fn item20_rejected_key_line_is_quoted_at_most_100_bytes() {
    let t = tree("item20", "ssh:\n  home: \"@HOME@\"\n  sshd: never\n");
    let junk = "J".repeat(200_000);
    let opts_junk = format!("no-pty,{} {}", "o".repeat(50_000), key(1, "x"));
    write(
        &t.volume().join("ssh/junk.pub"),
        &format!("{junk}\n{opts_junk}\n{}\n", key(2, "fine")),
    );
    let out = t.prepare();
    out.assert_code(0);
    let lines: Vec<&str> = out.stderr_lines_with("junk.pub:");
    assert_eq!(lines.len(), 2, "{}", out.all());
    for l in &lines {
        assert!(l.len() < 400, "a {}-byte warning: {}…", l.len(), &l[..300]);
    }
    assert!(lines[0].contains("(line truncated)"), "{}", lines[0]);
    let ak = std::fs::read_to_string(t.home().join(".ssh/authorized_keys")).expect("ak");
    assert!(ak.contains(" fine\n"));
}

/// Issue 13 item 11: the words of the SSH step say what happened.
#[test]
fn issue13_item11_ssh_messages_say_what_happened() {
    let t = tree("i13-11", "ssh:\n  home: \"@HOME@\"\n  sshd: never\n");
    // A first start without keys.
    let out = t.prepare();
    out.assert_code(0);
    out.assert_stderr(&format!(
        "ssh: no keys in {}, {}",
        t.volume().join("ssh").display(),
        t.volume().join("ms_ssh").display()
    ));
    out.assert_no_stderr("0 key(s)");
    // A key and a line that is not one.
    write(
        &t.volume().join("ssh/a.pub"),
        &format!("{}\nthis is not a key\n", key(1, "alice")),
    );
    let out = t.prepare();
    out.assert_stderr("ssh: installed 1 key(s)");
    out.assert_stderr(
        "a.pub:2:1: not a public key line: expected [options] key-type base64 [comment]",
    );
    out.assert_no_stderr("unknown key type `is`");
    // The same again: in place.
    let out = t.prepare();
    out.assert_stderr("ssh: already in place: 1 key(s)");
    // Revoked.
    std::fs::remove_file(t.volume().join("ssh/a.pub")).expect("rm");
    let out = t.prepare();
    out.assert_stderr("ssh: removed 1 key(s)");
    out.assert_no_stderr("installed 0 key(s)");
}

/// Item 9: `ssh.host_keys_dir` planted as a link to a world-writable
/// sticky directory outside the volume: never chmod-ed, never filled.
#[test]
fn item09_host_keys_dir_link_is_never_chmodded_or_filled() {
    let t = tree("item09", "ssh:\n  sshd: always\n");
    write(&t.volume().join("ssh/a.pub"), &format!("{}\n", key(1, "a")));
    let sticky = t.outside().join("tmp");
    std::fs::create_dir_all(&sticky).expect("sticky");
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    std::fs::create_dir_all(t.volume().join("configuration")).expect("conf");
    symlink(&sticky, t.volume().join("configuration/ssh_host_keys")).expect("link");
    let out = t.launch(&["prepare"]).tmpfs("/etc/ssh").run();
    let all = out.all();
    assert_eq!(
        std::fs::metadata(&sticky).expect("md").mode() & 0o7777,
        0o1777,
        "the link's target was chmod-ed\n{all}"
    );
    assert_eq!(
        std::fs::read_dir(&sticky).expect("ls").count(),
        0,
        "host keys were written through the link\n{all}"
    );
    assert!(
        all.contains("ssh_host_keys: is a symbolic link: refused"),
        "{all}"
    );
    assert_eq!(out.code, Some(0), "sshd still gets host keys\n{all}");
}

// ----- the pillar override ----------------------------------------------------

/// Item 11: the override is a link into `x/c0/…/c59/` inside the volume
/// (as a Kubernetes mount has it), and `x` is swapped again and again with
/// a link to the same tree outside, holding a root-only pillar: a check and
/// a read in two steps then install the outside file. It is never
/// installed, and the installed pillar keeps the target's mode.
#[test]
fn item11_override_flipped_to_an_outside_link_is_never_installed() {
    let t = tree("item11", "pillar:\n  on_invalid: keep-default\n");
    std::fs::set_permissions(t.pillar(), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let conf = t.volume().join("configuration");
    let (inside, outside) = (
        conf.join("x").join(chain()),
        t.outside().join("x").join(chain()),
    );
    std::fs::create_dir_all(&inside).expect("inside");
    std::fs::create_dir_all(&outside).expect("outside");
    let good = "makina-projects.demo:\n  data:\n    site: from-volume\n";
    write(&inside.join("pillar.sls"), good);
    std::fs::set_permissions(
        inside.join("pillar.sls"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
    let secret = outside.join("pillar.sls");
    write(&secret, "stolen: TOP-SECRET\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    symlink(
        Path::new("x").join(chain()).join("pillar.sls"),
        conf.join("pillar.sls"),
    )
    .expect("link");
    symlink(t.outside().join("x"), conf.join("x.swap")).expect("link");
    let flipper = Flipper::exchanging(conf.join("x"), conf.join("x.swap"));
    let mut installed = 0;
    for run in 0..150 {
        let out = t
            .launch(&["--skip", "ssh", "prepare"])
            .timeout(Duration::from_secs(60))
            .run();
        let now = std::fs::read_to_string(t.pillar()).expect("pillar");
        assert!(
            !now.contains("TOP-SECRET"),
            "run {run}: installed from outside\n{}",
            out.all()
        );
        assert!(
            !out.all().contains("TOP-SECRET"),
            "run {run}: echoed\n{}",
            out.all()
        );
        assert_eq!(
            std::fs::metadata(t.pillar()).expect("md").mode() & 0o7777,
            0o640,
            "run {run}: the pillar's mode changed"
        );
        if now == good {
            installed += 1;
        }
    }
    flipper.stop();
    assert!(installed > 0, "the good override was never installed");
}

/// Item 21: an override that is not UTF-8, or too big, is an invalid
/// override: 78 with `on_invalid: abort`, a warning with `keep-default`.
#[test]
fn item21_non_utf8_or_huge_override_is_an_invalid_override() {
    for (policy, code) in [("abort", Some(78)), ("keep-default", Some(5))] {
        let t = tree(
            &format!("item21-{policy}"),
            &format!("pillar:\n  on_invalid: {policy}\n"),
        );
        let over = t.source();
        std::fs::create_dir_all(over.parent().expect("dir")).expect("mkdir");
        std::fs::write(&over, b"a: 1\nb: caf\xe9\n").expect("write");
        let out = t
            .launch(&["--skip", "ssh", "--", "sh", "-c", "exit 5"])
            .run();
        assert_eq!(out.code, code, "{policy}\n{}", out.all());
        assert!(
            out.stderr.contains("pillar.sls:2:7: not valid UTF-8"),
            "{policy}\n{}",
            out.all()
        );
        assert_eq!(
            std::fs::read_to_string(t.pillar()).expect("p"),
            IMAGE_PILLAR
        );
        // Over the size limit.
        let big: String = (0..60_000)
            .map(|i| format!("key{i}: value {i}\n"))
            .collect();
        assert!(big.len() > 1 << 20);
        std::fs::write(&over, big).expect("write");
        let out = t
            .launch(&["--skip", "ssh", "--", "sh", "-c", "exit 5"])
            .run();
        assert_eq!(out.code, code, "{policy}\n{}", out.all());
        assert!(
            out.stderr
                .contains("is larger than 1 MiB, the limit: refused"),
            "{policy}\n{}",
            out.all()
        );
    }
}

/// Issue 13 item 7: an invalid override after a good one does not leave
/// the good one installed: the image default comes back, and the message
/// says so (with abort and with keep-default).
#[test]
fn issue13_item07_invalid_override_after_a_good_one_restores_the_default() {
    for (policy, code, tail) in [
        ("abort", Some(78), "stopping (on_invalid: abort)"),
        (
            "keep-default",
            Some(0),
            "going on (on_invalid: keep-default)",
        ),
    ] {
        let t = tree(
            &format!("i13-07-{policy}"),
            &format!("pillar:\n  on_invalid: {policy}\n"),
        );
        let over = t.source();
        let good = "makina-projects.demo:\n  data:\n    site: from-volume\n";
        write(&over, good);
        let out = t.launch(&["--skip", "ssh", "prepare"]).run();
        out.assert_code(0);
        assert_eq!(std::fs::read_to_string(t.pillar()).expect("p"), good);
        // Now a broken one.
        write(&over, "makina-projects.demo:\n  data: [1, 2\n");
        let out = t.launch(&["--skip", "ssh", "prepare"]).run();
        assert_eq!(out.code, code, "{policy}\n{}", out.all());
        assert_eq!(
            std::fs::read_to_string(t.pillar()).expect("p"),
            IMAGE_PILLAR,
            "{policy}: the stale override is still installed"
        );
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("YAML syntax error"))
            .unwrap_or_else(|| panic!("{}", out.all()));
        assert!(
            line.contains("configuration/pillar.sls:2:9: YAML syntax error")
                && line.contains("; the image default is installed (restored); ")
                && line.ends_with(tail),
            "{policy}: {line}"
        );
        // Again: the default is already there, and the message says that.
        let out = t.launch(&["--skip", "ssh", "prepare"]).run();
        assert_eq!(out.code, code, "{}", out.all());
        out.assert_stderr("the image default is installed (it already was)");
    }
}

// ----- prepopulate ------------------------------------------------------------

const PREPOP: &str = "prepopulate:\n  - src: \"{{ paths.project }}/.salt/files/default-data\"\n    dest: \"{{ paths.volume }}/data\"\n";

fn seed(t: &Tree, files: usize, size: usize) -> PathBuf {
    let src = t.d.join("projects/demo/project/.salt/files/default-data");
    for i in 0..files {
        let body: Vec<u8> = (0..size).map(|j| ((i * 31 + j) % 251) as u8).collect();
        let p = src.join(format!("d{}/f{i}.dat", i % 17));
        std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
        std::fs::write(&p, body).expect("write");
    }
    src
}

/// Item 2: the prepopulate marker planted as a link to a file outside the
/// volume is not written through; the copy still happens.
#[test]
fn item02_prepopulate_marker_symlink_is_not_written_through() {
    let t = tree("item02", PREPOP);
    seed(&t, 5, 10);
    let victim = t.outside().join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let dest = t.volume().join("data");
    std::fs::create_dir_all(&dest).expect("dest");
    symlink(&victim, dest.join(".mc-launcher-prepopulate-incomplete")).expect("link");
    let out = t.launch(&["--skip", "ssh", "prepare"]).run();
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n",
        "{}",
        out.all()
    );
    out.assert_code(0);
    assert!(dest.join("d1/f1.dat").exists(), "{}", out.all());
    assert!(std::fs::symlink_metadata(dest.join(".mc-launcher-prepopulate-incomplete")).is_err());
}

/// Item 10: while the copy runs, each directory it is filling is swapped
/// (atomically) for a link to a directory outside the volume that holds
/// files of the same names: nothing outside is created, written, chmod-ed
/// or chown-ed, and the launcher ends normally.
#[test]
fn item10_link_appearing_mid_copy_cannot_redirect_it() {
    let t = tree("item10", PREPOP);
    seed(&t, 3000, 2048);
    let dest = t.volume().join("data");
    let target = t.outside().join("target");
    std::fs::create_dir_all(&target).expect("target");
    for i in 0..3000 {
        let decoy = target.join(format!("f{i}.dat"));
        std::fs::write(&decoy, "decoy").expect("decoy");
        std::fs::set_permissions(&decoy, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let before = listing(&target);
    let swap = t.volume().join("swap");
    for round in 0..5 {
        let _ = std::fs::remove_dir_all(&dest);
        let _ = std::fs::remove_dir_all(&swap);
        std::fs::create_dir_all(&swap).expect("swap");
        for k in 0..17 {
            symlink(&target, swap.join(format!("l{k}"))).expect("link");
        }
        let flipper = {
            let (dest, swap) = (dest.clone(), swap.clone());
            Flipper::start(move |i| {
                let k = i % 17;
                let d = dest.join(format!("d{k}"));
                if std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
                    exchange(&d, &swap.join(format!("l{k}")));
                }
            })
        };
        let out = t
            .launch(&["--skip", "ssh", "prepare"])
            .timeout(Duration::from_secs(60))
            .run();
        let flips = flipper.flips();
        drop(flipper);
        assert!(flips > 0);
        assert!(
            matches!(out.code, Some(0) | Some(1)),
            "round {round}: the launcher did not behave\n{}",
            out.all()
        );
        assert!(
            listing(&target) == before,
            "round {round}: the copy reached outside the volume\n{}",
            out.all()
        );
    }
}

/// Item 24: a sparse file stays sparse, hard links stay hard links.
#[test]
fn item24_prepopulate_keeps_sparse_files_and_hardlinks() {
    let t = tree("item24", PREPOP);
    let src = seed(&t, 1, 10);
    let sparse = src.join("sparse.img");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&sparse).expect("create");
        f.write_all(b"head").expect("w");
        f.seek(SeekFrom::Start(32 << 20)).expect("seek");
        f.write_all(b"middle").expect("w");
        f.set_len(64 << 20).expect("len");
    }
    let src_blocks = std::fs::metadata(&sparse).expect("md").blocks();
    assert!(
        src_blocks * 512 < 1 << 20,
        "the test's filesystem keeps no holes"
    );
    std::fs::write(src.join("one"), "shared body\n").expect("w");
    std::fs::hard_link(src.join("one"), src.join("d0/two")).expect("hardlink");
    let out = t.launch(&["--skip", "ssh", "prepare"]).run();
    out.assert_code(0);
    let dest = t.volume().join("data");
    let md = std::fs::metadata(dest.join("sparse.img")).expect("md");
    assert_eq!(md.len(), 64 << 20);
    assert!(
        md.blocks() * 512 < 1 << 20,
        "the copy is {} KiB on disk: the holes were filled",
        md.blocks() / 2
    );
    let copy = std::fs::read(dest.join("sparse.img")).expect("read");
    assert_eq!(&copy[..4], b"head");
    assert_eq!(&copy[32 << 20..(32 << 20) + 6], b"middle");
    assert!(copy[4..32 << 20].iter().all(|&b| b == 0));
    let (a, b) = (
        std::fs::metadata(dest.join("one")).expect("md"),
        std::fs::metadata(dest.join("d0/two")).expect("md"),
    );
    assert_eq!(a.ino(), b.ino(), "the hard link was split into two copies");
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        std::fs::read_to_string(dest.join("d0/two")).expect("r"),
        "shared body\n"
    );
}

// ----- log files and templates ---------------------------------------------------

/// Item 7: a `file` log stream in the volume whose file (or directory) was
/// planted as a link outside: the service's output never lands there.
#[test]
fn item07_file_log_stream_in_the_volume_does_not_follow_links() {
    for planted in ["file", "dir"] {
        let t = tree(
            &format!("item07-{planted}"),
            "services:\n  s:\n    cmd: [sh, -c, \"echo SERVICE-OUTPUT\"]\n    critical: true\n    respawn: false\n    stdout: {file: \"{{ paths.volume }}/logs/app.log\"}\n",
        );
        let victim = t.outside().join("victim.log");
        std::fs::write(&victim, "precious\n").expect("victim");
        let logs = t.volume().join("logs");
        match planted {
            "file" => {
                std::fs::create_dir_all(&logs).expect("logs");
                symlink(&victim, logs.join("app.log")).expect("link");
            }
            _ => symlink(t.outside(), &logs).expect("link"),
        }
        let out = t.launch(&["--skip", "ssh"]).run();
        let all = out.all();
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious\n",
            "{planted}: written through the link\n{all}"
        );
        assert!(!t.outside().join("app.log").exists(), "{planted}\n{all}");
        assert!(
            all.contains("is a symbolic link"),
            "{planted}: not said\n{all}"
        );
    }
}

/// Item 8: a `template` step whose dest is in the volume, with a directory
/// on the way planted as a link outside: the rendered file never lands
/// outside the volume.
#[test]
fn item08_template_dest_through_a_planted_dir_link_stays_in_the_volume() {
    let t = tree(
        "item08",
        "reconfigure:\n  steps:\n    - template: {src: \"{{ paths.project }}/.salt/files/app.json.j2\", dest: \"{{ paths.volume }}/configuration/app.json\"}\n",
    );
    write(
        &t.d.join("projects/demo/project/.salt/files/app.json.j2"),
        "{\"site\": \"{{ project }}\"}\n",
    );
    symlink(t.outside(), t.volume().join("configuration")).expect("link");
    // (The pillar step would refuse that link too: skipped, to see the step.)
    let out = t.launch(&["--skip", "ssh,pillar", "prepare"]).run();
    let all = out.all();
    assert!(
        !t.outside().join("app.json").exists(),
        "written outside\n{all}"
    );
    assert_eq!(out.code, Some(1), "{all}");
    assert!(
        all.contains("configuration: is a symbolic link: refused"),
        "{all}"
    );
    // Without the link, the same step writes where it should.
    std::fs::remove_file(t.volume().join("configuration")).expect("rm");
    let out = t.launch(&["--skip", "ssh", "prepare"]).run();
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(t.volume().join("configuration/app.json")).expect("r"),
        "{\"site\": \"demo\"}\n"
    );
}
