use super::*;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

use super::scratch::Tmp;

fn tmp(tag: &str) -> Tmp {
    Tmp::new(&format!("fsutil-{tag}"))
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// root/ (the trusted directory) and outside/ next to it:
///
/// root/file, root/dir/inner, root/in_link -> file, root/dir_link -> dir,
/// root/up_inside -> dir/../file, root/out_abs -> /…/outside/secret,
/// root/out_rel -> ../outside/secret, root/fifo, root/big (2 KiB),
/// root/conf/{..2026_12_02_07_00_00.123456789/pillar.sls, ..data ->
/// ..2026…, pillar.sls -> ..data/pillar.sls} (a Kubernetes ConfigMap),
/// root/loop_a <-> root/loop_b.
fn tree(t: &Tmp) -> (PathBuf, PathBuf) {
    let root = t.0.join("root");
    let out = t.0.join("outside");
    std::fs::create_dir_all(root.join("dir")).expect("dir");
    std::fs::create_dir_all(&out).expect("outside");
    std::fs::write(out.join("secret"), "secret").expect("w");
    std::fs::write(root.join("file"), "hello").expect("w");
    std::fs::write(root.join("dir/inner"), "inner").expect("w");
    symlink("file", root.join("in_link")).expect("ln");
    symlink("dir", root.join("dir_link")).expect("ln");
    symlink("dir/../file", root.join("up_inside")).expect("ln");
    symlink(out.join("secret"), root.join("out_abs")).expect("ln");
    symlink("../outside/secret", root.join("out_rel")).expect("ln");
    mkfifo(&root.join("fifo"));
    std::fs::write(root.join("big"), vec![b'x'; 2048]).expect("w");
    let conf = root.join("conf");
    let stamp = "..2026_12_02_07_00_00.123456789";
    std::fs::create_dir_all(conf.join(stamp)).expect("k8s");
    std::fs::write(conf.join(stamp).join("pillar.sls"), "k8s: yes\n").expect("w");
    symlink(stamp, conf.join("..data")).expect("ln");
    symlink("..data/pillar.sls", conf.join("pillar.sls")).expect("ln");
    symlink("loop_b", root.join("loop_a")).expect("ln");
    symlink("loop_a", root.join("loop_b")).expect("ln");
    (root, out)
}

#[derive(Debug, PartialEq)]
enum Want {
    /// Opened; the content when a file.
    Ok(&'static str),
    Link,
    Outside,
    Kind(&'static str),
    Errno(Errno),
}

fn outcome(r: Result<(OwnedFd, FileStat), FsError>) -> Want {
    match r {
        Ok((fd, st)) => {
            if is_regular(&st) {
                let mut s = String::new();
                File::from(fd).read_to_string(&mut s).expect("read");
                Want::Ok(Box::leak(s.into_boxed_str()))
            } else {
                Want::Ok("")
            }
        }
        Err(e) => match e.refusal() {
            Some(Refusal::Link) => Want::Link,
            Some(Refusal::Outside(_)) => Want::Outside,
            Some(Refusal::Kind { found, .. }) => Want::Kind(found),
            Some(Refusal::TooBig(_)) => panic!("no read here"),
            None => Want::Errno(Errno::from_raw(e.err.raw_os_error().unwrap_or(0))),
        },
    }
}

#[test]
fn open_beneath_table_for_both_strategies() {
    use Links::{Beneath, Refuse};
    let t = tmp("table");
    let (root, _) = tree(&t);
    let rows: &[(&str, Links, Kind, Want)] = &[
        ("file", Beneath, Kind::File, Want::Ok("hello")),
        ("file", Refuse, Kind::File, Want::Ok("hello")),
        ("dir/inner", Refuse, Kind::File, Want::Ok("inner")),
        // A link that stays inside: followed for reads, refused for writes.
        ("in_link", Beneath, Kind::File, Want::Ok("hello")),
        ("in_link", Refuse, Kind::File, Want::Link),
        ("dir_link/inner", Beneath, Kind::File, Want::Ok("inner")),
        ("dir_link/inner", Refuse, Kind::File, Want::Link),
        ("up_inside", Beneath, Kind::File, Want::Ok("hello")),
        (
            "conf/pillar.sls",
            Beneath,
            Kind::File,
            Want::Ok("k8s: yes\n"),
        ),
        ("conf/pillar.sls", Refuse, Kind::File, Want::Link),
        // Links to outside: refused, whatever the mode.
        ("out_abs", Beneath, Kind::File, Want::Outside),
        ("out_abs", Refuse, Kind::File, Want::Link),
        ("out_rel", Beneath, Kind::File, Want::Outside),
        ("out_rel", Refuse, Kind::File, Want::Link),
        ("../outside/secret", Beneath, Kind::File, Want::Outside),
        (
            "dir/../../outside/secret",
            Refuse,
            Kind::File,
            Want::Outside,
        ),
        // The type is checked on the opened fd: a FIFO opens at once (no
        // writer: it would block without O_NONBLOCK) and is refused.
        ("fifo", Beneath, Kind::File, Want::Kind("a FIFO")),
        ("dir", Beneath, Kind::File, Want::Kind("a directory")),
        ("dir", Refuse, Kind::Dir, Want::Ok("")),
        ("dir_link", Beneath, Kind::Dir, Want::Ok("")),
        ("dir_link", Refuse, Kind::Dir, Want::Link),
        ("file", Beneath, Kind::Dir, Want::Errno(Errno::ENOTDIR)),
        ("", Refuse, Kind::Dir, Want::Ok("")),
        ("missing", Beneath, Kind::File, Want::Errno(Errno::ENOENT)),
        ("missing/x", Refuse, Kind::File, Want::Errno(Errno::ENOENT)),
        ("loop_a", Beneath, Kind::File, Want::Errno(Errno::ELOOP)),
        ("loop_a", Refuse, Kind::File, Want::Link),
    ];
    let d = DirFd::open(&root).expect("root");
    for strategy in [Strategy::Openat2, Strategy::Walk] {
        for (rel, links, kind, want) in rows {
            // Guard against a blocking open (a FIFO): the test must end.
            let (tx, rx) = std::sync::mpsc::channel();
            let (root2, rel2) = (root.clone(), rel.to_string());
            let (links, kind) = (*links, *kind);
            std::thread::spawn(move || {
                let d = DirFd::open(&root2).expect("root");
                let got = outcome(d.open_using(
                    Some(strategy),
                    Path::new(&rel2),
                    links,
                    kind,
                    OFlag::O_RDONLY,
                ));
                let _ = tx.send(got);
            });
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{strategy:?} {rel}: the open blocked"));
            assert_eq!(&got, want, "{strategy:?} {rel} {links:?} {kind:?}");
        }
    }
    // The refusal names the link, not just the whole path.
    let e = d
        .dir(Path::new("dir_link"), Links::Refuse)
        .expect_err("link");
    assert_eq!(e.path, root.join("dir_link"));
    assert!(e.to_string().contains("is a symbolic link: refused"), "{e}");
    let e = d
        .file(Path::new("out_rel"), Links::Beneath)
        .expect_err("out");
    assert!(
        e.to_string()
            .contains(&format!("leads outside {}", root.display())),
        "{e}"
    );
}

#[test]
fn bounded_reads_name_the_limit() {
    let t = tmp("bounded");
    let (root, _) = tree(&t);
    let d = DirFd::open(&root).expect("root");
    assert_eq!(
        d.read(Path::new("big"), Links::Beneath, 2048)
            .expect("fits"),
        vec![b'x'; 2048]
    );
    let e = d
        .read(Path::new("big"), Links::Beneath, 1024)
        .expect_err("too big");
    assert_eq!(e.refusal(), Some(&Refusal::TooBig(1024)));
    assert!(
        e.to_string().contains("larger than 1 KiB, the limit"),
        "{e}"
    );
    assert_eq!(
        read_prefix(&mut &b"abcdef"[..], 3).expect("prefix"),
        b"abc".to_vec()
    );
    assert_eq!(human_size(1 << 20), "1 MiB");
    assert_eq!(human_size(256 * 1024), "256 KiB");
    assert_eq!(human_size(1000), "1000 bytes");
    // read_file_in: beneath a root when under it, by path otherwise.
    assert_eq!(
        read_file_in(&root.join("conf/pillar.sls"), Some(&root), 100).expect("k8s"),
        b"k8s: yes\n".to_vec()
    );
    let e = read_file_in(&root.join("out_abs"), Some(&root), 100).expect_err("outside");
    assert!(matches!(e.refusal(), Some(Refusal::Outside(_))), "{e}");
    assert_eq!(e.path, root.join("out_abs"));
}

#[test]
fn atomic_write_replaces_with_mode_and_leaves_no_temp() {
    let t = tmp("atomic");
    let d = t.0.join("d");
    std::fs::create_dir_all(&d).expect("dir");
    let p = d.join("f");
    std::fs::write(&p, "old").expect("write");
    write_atomic(&p, b"new", 0o640, None).expect("atomic");
    assert_eq!(std::fs::read_to_string(&p).expect("read"), "new");
    assert_eq!(std::fs::metadata(&p).expect("md").mode() & 0o777, 0o640);
    assert_eq!(
        std::fs::read_dir(&d).expect("ls").count(),
        1,
        "no temp file left"
    );
    let err = write_atomic(&d.join("missing/f"), b"x", 0o600, None).expect_err("no dir");
    assert!(err.to_string().contains("missing"), "{err}");
    // A link at the name is replaced, never written through.
    std::fs::write(t.0.join("victim"), "untouched").expect("w");
    symlink(t.0.join("victim"), d.join("lnk")).expect("ln");
    DirFd::open(&d)
        .expect("d")
        .write_atomic(OsStr::new("lnk"), b"mine", 0o600, None)
        .expect("write");
    assert_eq!(
        std::fs::read_to_string(t.0.join("victim")).expect("r"),
        "untouched"
    );
    assert!(!std::fs::symlink_metadata(d.join("lnk"))
        .expect("md")
        .file_type()
        .is_symlink());
    // Only plain names: no path escapes the directory.
    let e = DirFd::open(&d)
        .expect("d")
        .write_atomic(OsStr::new("../x"), b"x", 0o600, None)
        .expect_err("not a name");
    assert!(e.to_string().contains("not a plain file name"), "{e}");
}

#[test]
fn writes_beneath_a_root_never_follow_links() {
    let t = tmp("writes");
    let (root, out) = tree(&t);
    // Through a directory link inside the root: refused.
    let e = write_atomic_in(&root.join("dir_link/new"), &root, b"x", 0o644, None)
        .expect_err("dir link");
    assert_eq!(e.refusal(), Some(&Refusal::Link), "{e}");
    assert!(!root.join("dir/new").exists());
    // A link to outside planted as a directory on the way: refused.
    symlink(&out, root.join("planted")).expect("ln");
    let e = write_atomic_in(&root.join("planted/x/new"), &root, b"x", 0o644, None)
        .expect_err("planted");
    assert_eq!(e.refusal(), Some(&Refusal::Link), "{e}");
    assert_eq!(
        std::fs::read_dir(&out).expect("ls").count(),
        1,
        "nothing written outside"
    );
    // Missing directories are created, real ones used.
    write_atomic_in(&root.join("a/b/c/new"), &root, b"deep", 0o600, None).expect("deep");
    assert_eq!(
        std::fs::read_to_string(root.join("a/b/c/new")).expect("r"),
        "deep"
    );
    // The root itself may be missing: it is the trusted part.
    let fresh = t.0.join("fresh-root");
    write_atomic_in(&fresh.join("conf/x"), &fresh, b"x", 0o600, None).expect("fresh");
    // A file where a directory is expected.
    let e = DirFd::open(&root)
        .expect("root")
        .mkdirs(Path::new("file/sub"), 0o755)
        .expect_err("file");
    assert_eq!(e.err.raw_os_error(), Some(nix::libc::ENOTDIR), "{e}");
    // mkdirs says what it created.
    let d = DirFd::open(&root).expect("root");
    assert!(d.mkdirs(Path::new("made"), 0o700).expect("made").1);
    assert!(!d.mkdirs(Path::new("made"), 0o700).expect("again").1);
    // ensure_dir changes the mode by fd; under an untrusted root a link
    // is refused and its target's mode is left alone.
    let sticky = t.0.join("sticky");
    std::fs::create_dir_all(&sticky).expect("sticky");
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    symlink(&sticky, root.join("hk")).expect("ln");
    let e = dir_for_write(&root.join("hk"), Some(&root), 0o700).expect_err("hk link");
    assert_eq!(e.refusal(), Some(&Refusal::Link), "{e}");
    assert_eq!(
        std::fs::metadata(&sticky).expect("md").mode() & 0o7777,
        0o1777
    );
}

#[test]
fn remove_tree_never_follows_links() {
    let t = tmp("remove");
    let (root, out) = tree(&t);
    std::fs::create_dir_all(root.join("tree/sub")).expect("mkdir");
    std::fs::write(root.join("tree/sub/f"), "x").expect("w");
    symlink(&out, root.join("tree/sub/out")).expect("ln");
    let d = DirFd::open(&root).expect("root");
    d.remove_tree(OsStr::new("tree")).expect("rm");
    assert!(!root.join("tree").exists());
    assert!(
        out.join("secret").exists(),
        "the link's target is untouched"
    );
    d.remove_tree(OsStr::new("tree")).expect("missing is fine");
    let names = d.entries().expect("ls");
    assert!(names.iter().any(|n| n == "file") && !names.iter().any(|n| n == "."));
}

#[test]
fn log_files_are_not_opened_through_planted_links() {
    let t = tmp("logs");
    let (root, out) = tree(&t);
    // Outside any untrusted root, in a directory not root's alone: the last
    // component is never followed, and a FIFO is refused (no blocking).
    let logs = t.0.join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    symlink(out.join("secret"), logs.join("app.log")).expect("ln");
    let e = open_append(&logs.join("app.log")).expect_err("link");
    assert_eq!(refusal(&e), Some(&Refusal::Link), "{e}");
    mkfifo(&logs.join("fifo.log"));
    assert!(open_append(&logs.join("fifo.log")).is_err());
    assert_eq!(
        std::fs::read_to_string(out.join("secret")).expect("r"),
        "secret"
    );
    let mut f = open_append(&logs.join("new/real.log")).expect("create");
    f.write_all(b"line\n").expect("write");
    let mut f = open_append(&logs.join("new/real.log")).expect("append");
    f.write_all(b"more\n").expect("write");
    assert_eq!(
        std::fs::read_to_string(logs.join("new/real.log")).expect("r"),
        "line\nmore\n"
    );
    // Under an untrusted root: no link anywhere below it.
    set_untrusted_roots(std::slice::from_ref(&root));
    let e = open_append(&root.join("dir_link/x.log")).expect_err("dir link");
    assert_eq!(refusal(&e), Some(&Refusal::Link), "{e}");
    assert!(!root.join("dir/x.log").exists());
    open_append(&root.join("dir/x.log")).expect("real dir");
    set_untrusted_roots(&[]);
}

#[test]
fn replace_entry_swaps_a_directory_in_whole() {
    let t = tmp("replace");
    let d = DirFd::open(&t.0).expect("open");
    let fill = |name: &str, v: &str| {
        let (sub, _) = d.mkdirs(Path::new(name), 0o700).expect("mkdirs");
        sub.write_atomic(OsStr::new("key"), v.as_bytes(), 0o400, None)
            .expect("write");
    };
    // No old one: a plain rename.
    fill(".new", "0");
    d.replace_entry(OsStr::new(".new"), OsStr::new("creds"))
        .expect("first");
    assert_eq!(
        std::fs::read_to_string(t.0.join("creds/key")).expect("r"),
        "0"
    );
    // Over a full one, while a reader reads by path: never missing.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, key) = (stop.clone(), t.0.join("creds/key"));
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                std::fs::read_to_string(&key).expect("the key is always there");
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=200 {
        fill(".new", &i.to_string());
        d.replace_entry(OsStr::new(".new"), OsStr::new("creds"))
            .expect("swap");
        assert!(
            d.stat_entry(OsStr::new(".new")).is_err(),
            "the old copy is gone"
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().expect("reader") > 0);
    assert_eq!(
        std::fs::read_to_string(t.0.join("creds/key")).expect("r"),
        "200"
    );
    assert_eq!(d.entries().expect("ls"), vec![OsString::from("creds")]);
}
