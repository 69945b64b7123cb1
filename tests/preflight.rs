//! The preflight of the prepare phase (README "Read-only and non-root containers"): in read-only and
//! non-root containers, what can work does, and what cannot stops with one
//! message naming the path, what it needs and the fix, before anything is
//! written; `check` prints the same text and a verdict. Each test runs the
//! launcher in a private mount namespace (read-only binds, tmpfs) over a
//! temp root, and checks that the image's pillar, the volume and the keys
//! are as they were.

mod common;
use common::tree::{Tree, IMAGE_PILLAR};
use common::*;
use std::os::unix::fs::PermissionsExt;

const OVERRIDE: &str = "makina-projects.demo:\n  data:\n    site: from-volume\n";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@test";

impl Tree {
    /// The copy of the image's pillar an image keeps at build time.
    fn keep_copy(&self) {
        write(&self.state().join("image-pillar.sls"), IMAGE_PILLAR);
        for (p, mode) in [
            (self.state(), 0o755),
            (self.state().join("image-pillar.sls"), 0o644),
        ] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
    /// Nothing the operator or the image had was changed.
    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            std::fs::read_to_string(self.pillar()).ok().as_deref(),
            Some(IMAGE_PILLAR),
            "{what}: the image's pillar changed"
        );
        if self.source().exists() {
            assert_eq!(
                std::fs::read_to_string(self.source()).expect("override"),
                OVERRIDE,
                "{what}: the override changed"
            );
        }
    }
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or("")
}

#[test]
fn read_only_pillar_dir_with_an_override_names_the_dir_and_the_tmpfs_flag() {
    let t = Tree::default_socket("pf-ro-pillar", "");
    t.keep_copy();
    write(&t.source(), OVERRIDE);
    let ro = format!("mount --bind -o ro {d} {d}", d = t.pillar_dir().display());
    let out = t.launch(&["prepare"]).before(&ro).run();
    let dir = t.pillar_dir().display().to_string();
    out.assert_code(78).assert_stderr_all(
        &[
            "cannot prepare this container: 1 path(s) that the prepare phase must write cannot be written (nothing was written):".into(),
            format!("\n  {dir}: read-only filesystem; needed to install the pillar override {}", t.source().display()),
            format!("\n  fix: add to docker run: --tmpfs {dir}\n"),
            format!("the image's default pillar comes back from {}/image-pillar.sls at every start", t.state().display()),
        ],
    );
    t.assert_untouched("prepare");

    // `check` says the same, beforehand, and ends with its verdict.
    let chk = t.launch(&["check"]).before(&ro).run();
    chk.assert_code(78);
    assert_eq!(
        preflight_message(&chk.stderr),
        preflight_message(&out.stderr)
    );
    assert_eq!(last_line(&chk.stdout), "check: 1 error(s)", "{}", chk.all());
    t.assert_untouched("check");
}

#[test]
fn read_only_pillar_dir_without_an_image_copy_says_how_to_keep_one() {
    let t = Tree::default_socket("pf-ro-nocopy", "");
    write(&t.source(), OVERRIDE);
    let ro = format!("mount --bind -o ro {d} {d}", d = t.pillar_dir().display());
    let out = t.launch(&["prepare"]).before(&ro).run();
    let (dir, state) = (t.pillar_dir(), t.state());
    out.assert_code(78).assert_stderr_all(
        &[
            format!("\n  {}: read-only filesystem; needed to install the pillar override", dir.display()),
            format!(
                "fix: remove the override from the volume; or keep a copy of the default pillar in the image, as its last build step: RUN mkdir -p {s} && cp -p {p} {s}/image-pillar.sls, then add to docker run: --tmpfs {d}",
                s = state.display(),
                p = t.pillar().display(),
                d = dir.display()
            ),
        ],
    );
    t.assert_untouched("prepare");
    let written = std::fs::read_dir(&state).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "the state dir was written");
}

/// The recipe's mechanism: the configured state dir read-only (as in
/// `docker run --read-only`) with the image's copy in it, a tmpfs over the
/// pillar dir. The fallback state dir gets the copy and the image default
/// comes back; an override is installed.
#[test]
fn a_tmpfs_over_the_pillar_dir_gets_the_image_default_back() {
    let t = Tree::default_socket("pf-tmpfs-pillar", "");
    t.keep_copy();
    let state_ro = format!("mount --bind -o ro {s} {s}", s = t.state().display());
    let cat = format!("echo '--- pillar'; cat {}", t.pillar().display());
    // `prepare` under the tmpfs succeeds and leaves `pillar` installed.
    let prepare_gives = |pillar: &str| {
        let out = t
            .launch(&["prepare"])
            .tmpfs(&t.pillar_dir().to_string_lossy())
            .before(&state_ro)
            .after(&cat)
            .run();
        out.assert_code(0);
        assert!(
            out.stdout.ends_with(&format!("--- pillar\n{pillar}")),
            "{}",
            out.all()
        );
        out
    };
    let out = prepare_gives(IMAGE_PILLAR);
    out.assert_stderr_all(
        &[
            "using /run/mc-launcher".into(),
            format!(
                "pillar: the image default pillar comes from the copy the image keeps in {}/image-pillar.sls",
                t.state().display()
            ),
        ],
    );
    write(&t.source(), OVERRIDE);
    prepare_gives(OVERRIDE);
    t.assert_untouched("tmpfs");
}

#[test]
fn a_mount_hiding_the_image_pillar_without_a_copy_stops_the_start() {
    let t = Tree::default_socket("pf-hidden", "");
    let dir = t.pillar_dir();
    let out = t
        .launch(&["prepare"])
        .tmpfs(&dir.to_string_lossy())
        .after(&format!("echo entries=$(ls -A {} | wc -l)", dir.display()))
        .run();
    out.assert_code(78).assert_stderr_all(
        &[
            format!(
                "\n  {}: a mount hides the image's init.sls, and the image keeps no copy of it in {}/image-pillar.sls; needed to keep the image's default pillar (it would be lost)",
                dir.display(),
                t.state().display()
            ),
            format!(
                "fix: keep a copy of the default pillar in the image, as its last build step: RUN mkdir -p {s} && cp -p {p} {s}/image-pillar.sls, or do not mount over {d}",
                s = t.state().display(),
                p = t.pillar().display(),
                d = dir.display()
            ),
        ],
    );
    out.assert_stdout("entries=0");
    t.assert_untouched("hidden");
}

#[test]
fn read_only_home_with_a_key_names_the_ssh_dir_and_the_tmpfs_flag() {
    let t = Tree::default_socket("pf-ro-ssh", "ssh:\n  sshd: never\n");
    write(&t.volume().join("ssh/op.pub"), &format!("{KEY}\n"));
    let kept =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl kept";
    let before = format!(
        "mkdir -m 0700 /root/.ssh && echo '{kept}' > /root/.ssh/authorized_keys && mount -o remount,ro /root"
    );
    let out = t
        .launch(&["prepare"])
        .before(&before)
        .after("echo '--- keys'; cat /root/.ssh/authorized_keys")
        .run();
    out.assert_code(78).assert_stderr_all(&[
        "\n  /root/.ssh: read-only filesystem; needed to install 1 SSH key(s) for root".into(),
        "\n  fix: add to docker run: --tmpfs /root/.ssh:mode=0700\n".into(),
    ]);
    assert!(
        out.stdout.ends_with(&format!("--- keys\n{kept}\n")),
        "the keys file changed: {}",
        out.all()
    );

    // The fix: a tmpfs on ~/.ssh over the read-only home.
    let fixed =
        "mkdir /root/.ssh && mount -o remount,ro /root && mount -t tmpfs -o mode=0700 tmpfs /root/.ssh";
    let out = t
        .launch(&["prepare"])
        .before(fixed)
        .after("echo '--- keys'; cat /root/.ssh/authorized_keys; stat -c %a /root/.ssh")
        .run();
    out.assert_code(0);
    out.assert_stdout(KEY);
    assert!(out.stdout.ends_with("700\n"), "{}", out.all());
}

#[test]
fn pillar_dir_not_writable_by_the_user_names_the_owner_and_a_tmpfs_of_theirs() {
    let t = Tree::default_socket("pf-user-pillar", "");
    t.keep_copy();
    write(&t.source(), OVERRIDE);
    let out = t.launch_as_nobody(&["--skip", "ssh", "prepare"]).run();
    let dir = t.pillar_dir().display().to_string();
    out.assert_code(78).assert_stderr_all(
        &[
            "cannot be written by uid 65534 (nothing was written):".into(),
            format!("\n  {dir}: owned by uid 0 with mode 0755, not writable by uid 65534; needed to install the pillar override"),
            format!("\n  fix: add to docker run: --tmpfs {dir}:uid=65534\n"),
        ],
    );
    t.assert_untouched("user");
}

#[test]
fn volume_owned_by_root_names_every_path_and_one_chown() {
    let t = Tree::default_socket(
        "pf-user-volume",
        "reconfigure:\n  steps:\n    - template: {src: \"{{ root }}/app.j2\", dest: \"{{ paths.volume }}/configuration/app.json\"}\nprepopulate:\n  - src: \"{{ root }}/seed\"\n    dest: \"{{ paths.volume }}/data\"\n",
    );
    write(
        &t.root().join("app.j2"),
        "{\"site\": \"{{ pillar['makina-projects.demo'].data.site }}\"}\n",
    );
    write(&t.root().join("seed/a.txt"), "seed\n");
    std::fs::create_dir_all(t.volume().join("configuration")).expect("dir");
    write(&t.volume().join("operator.txt"), "the operator's\n");
    let out = t.launch_as_nobody(&["--skip", "ssh", "prepare"]).run();
    let v = t.volume().display().to_string();
    out.assert_code(78).assert_stderr_all(
        &[
            "cannot prepare this container: 2 path(s)".into(),
            format!("\n  {v}/configuration: owned by uid 0 with mode 0755, not writable by uid 65534; needed by template-1 to write {v}/configuration/app.json"),
            format!("\n  {v}/data: cannot be created in {v}: owned by uid 0 with mode 0755, not writable by uid 65534; needed to prepopulate {v}/data"),
            format!("\n  fix: give the data volume to uid 65534: `chown -R 65534` its directory on the host, or for a named volume `docker run --rm -v VOLUME:{v} --entrypoint chown IMAGE -R 65534 {v}`"),
        ],
    );
    assert_eq!(out.stderr.matches("fix:").count(), 1, "{}", out.all());
    assert!(!t.volume().join("configuration/app.json").exists());
    assert!(!t.volume().join("data").exists());
    assert_eq!(
        std::fs::read_to_string(t.volume().join("operator.txt")).expect("data"),
        "the operator's\n"
    );
    t.assert_untouched("volume");

    // Given to the user, it works.
    chown_r("65534", &t.volume());
    let out = t.launch_as_nobody(&["--skip", "ssh", "prepare"]).run();
    out.assert_code(0);
    assert!(t.volume().join("data/a.txt").exists(), "{}", out.all());
}

#[test]
fn no_writable_state_dir_anywhere_says_tmpfs_run() {
    let t = Tree::default_socket("pf-state", "");
    std::fs::create_dir_all(t.state()).expect("state");
    let scratch = t.root().join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let before = format!(
        "mount --bind -o ro {s} {s} && mount --bind -o ro {x} {x} && mount -o remount,ro /run",
        s = t.state().display(),
        x = scratch.display()
    );
    let launch = |verb: &str| {
        t.launch(&[verb])
            .env("TMPDIR", &scratch.to_string_lossy())
            .env("XDG_RUNTIME_DIR", "")
            .before(&before)
            .run()
    };
    let s = t.state().display().to_string();
    let socket = format!("mc-launcher: warning: control socket: none of /run/mc-launcher.sock, {s}/mc-launcher.sock, /run/mc-launcher/mc-launcher.sock, {}/mc-launcher-0/mc-launcher.sock can be created: `mc-launcher ctl` and a HEALTHCHECK using it will not reach the launcher (add to docker run: --tmpfs /run)\n", scratch.display());
    for verb in ["prepare", "check"] {
        let out = launch(verb);
        assert_eq!(out.code, Some(78), "{verb}: {}", out.all());
        let mut want = vec![
            format!("\n  {s}: not writable, and neither is any fallback ({s}, /run/mc-launcher, {}/mc-launcher-0); needed to keep a copy of the image's default pillar", scratch.display()),
            "\n  fix: add to docker run: --tmpfs /run\n".into(),
        ];
        if verb == "check" {
            // Nor could the control socket go anywhere: `check` says so;
            // a run says it once, when it binds (`prepare` binds none).
            want.push(socket.clone());
        } else {
            assert!(!out.all().contains("control socket"), "{}", out.all());
        }
        out.assert_stderr_all(&want);
    }
    t.assert_untouched("state");
}

#[test]
fn check_ends_with_one_verdict_line() {
    let t = Tree::default_socket("pf-verdict", "");
    let ok = t.launch(&["check"]).run();
    ok.assert_code(0);
    assert_eq!(last_line(&ok.stdout), "check: OK", "{}", ok.all());

    // A state dir that falls back is a warning, counted.
    let ro = format!(
        "mkdir -p {s} && mount --bind -o ro {s} {s}",
        s = t.state().display()
    );
    let warned = t.launch(&["check"]).before(&ro).run();
    warned.assert_code(0);
    assert_eq!(
        last_line(&warned.stdout),
        "check: OK, 1 warning(s)",
        "{}",
        warned.all()
    );
    assert!(
        warned.stderr.contains("warning: state dir ")
            && warned.stderr.contains("/run/mc-launcher would be used"),
        "{}",
        warned.all()
    );

    // Errors are counted: an invalid override and a read-only pillar dir.
    write(&t.source(), "makina-projects.demo: [unclosed\n");
    let bad = t.launch(&["check"]).run();
    bad.assert_code(78);
    assert_eq!(last_line(&bad.stdout), "check: 1 error(s)", "{}", bad.all());
    write(&t.source(), OVERRIDE);
    let ro = format!("mount --bind -o ro {d} {d}", d = t.pillar_dir().display());
    let two = t
        .launch(&["check"])
        .before(&format!(
            "{ro} && mkdir -p {s} && mount --bind -o ro {s} {s}",
            s = t.state().display()
        ))
        .run();
    two.assert_code(78);
    assert_eq!(
        last_line(&two.stdout),
        "check: 1 error(s), 1 warning(s)",
        "{}",
        two.all()
    );
    t.assert_untouched("check");
}

/// No key yet and a home that cannot be written: the start goes on, with a
/// warning that keys added later will not be installed, and the fix.
#[test]
fn read_only_home_without_keys_is_a_warning() {
    let t = Tree::default_socket("pf-ro-home", "ssh:\n  sshd: never\n");
    let out = t
        .launch(&["check"])
        .before("mount -o remount,ro /root")
        .run();
    out.assert_code(0);
    assert_eq!(
        last_line(&out.stdout),
        "check: OK, 1 warning(s)",
        "{}",
        out.all()
    );
    out.assert_stderr_all(
        &["mc-launcher: warning: ssh: /root/.ssh: cannot be created in /root: read-only filesystem: keys added to the volume while running will not be installed (add to docker run: --tmpfs /root/.ssh:mode=0700)\n".into()],
    );
    let out = t
        .launch(&["prepare"])
        .before("mount -o remount,ro /root")
        .run();
    out.assert_code(0);
    assert_eq!(
        out.stderr
            .matches("keys added to the volume while running")
            .count(),
        1,
        "{}",
        out.all()
    );
    t.assert_untouched("no keys");
}

/// `docker run --read-only` without a tmpfs, the image keeping its
/// pillar's copy: the start works, and the digest of the reconfigure's
/// inputs, which cannot be recorded, is said once with the path that must
/// be writable and how to make it so.
#[test]
fn a_digest_that_cannot_be_recorded_names_the_state_dir_and_the_fix_once() {
    let t = Tree::default_socket(
        "pf-digest",
        "reconfigure:\n  steps:\n    - template:\n        src: \"{{ paths.project }}/.salt/files/app.conf.j2\"\n        dest: \"{{ paths.volume }}/configuration/app.conf\"\n",
    );
    write(
        &t.project().join(".salt/files/app.conf.j2"),
        "site={{ pillar['makina-projects.demo'].data.site }}\n",
    );
    t.keep_copy();
    let scratch = t.root().join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let before = format!(
        "mount --bind -o ro {s} {s} && mount --bind -o ro {x} {x} && mount -o remount,ro /run",
        s = t.state().display(),
        x = scratch.display()
    );
    let out = t
        .launch(&["--skip", "ssh", "--", "true"])
        .env("TMPDIR", &scratch.to_string_lossy())
        .env("XDG_RUNTIME_DIR", "")
        .before(&before)
        .run();
    out.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(t.volume().join("configuration/app.conf"))
            .ok()
            .as_deref(),
        Some("site=image-default\n")
    );
    let s = t.state().display().to_string();
    out.assert_stderr_count("reconfigure.digest", 1);
    out.assert_stderr(&format!(
        "mc-launcher: warning: reconfigure: cannot record the digest of its inputs: {s}/reconfigure.digest: Read-only file system (os error 30) (the filesystem is mounted read-only); the state dir {s} must be writable to keep it (add to docker run: --tmpfs /run, where the state dir falls back to /run/mc-launcher; or mount a volume on {s})\n"
    ));
    t.assert_untouched("digest");
}

/// `on_invalid: last-good` with no writable state dir: the copy that
/// cannot be kept is said once, with the fix, not at every live
/// reconfigure that installs an override.
#[test]
fn a_last_good_copy_that_cannot_be_kept_is_said_once() {
    let t = Tree::new("pf-lastgood", "pillar:\n  on_invalid: last-good\n");
    t.keep_copy();
    write(&t.source(), OVERRIDE);
    let scratch = t.root().join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let before = format!(
        "mount --bind -o ro {s} {s} && mount --bind -o ro {x} {x} && mount -o remount,ro /run",
        s = t.state().display(),
        x = scratch.display()
    );
    let run = t
        .launch(&["--skip", "ssh", "--", "sleep", "1000"])
        .env("TMPDIR", &scratch.to_string_lossy())
        .env("XDG_RUNTIME_DIR", "")
        .before(&before)
        .spawn();
    wait_state(&run, "main", "running", std::time::Duration::from_secs(20));
    for site in ["two", "three"] {
        write(
            &t.source(),
            &format!("makina-projects.demo:\n  data:\n    site: {site}\n"),
        );
        ctl(&run, &["reconfigure"]).assert_code(0);
    }
    let out = run.stop();
    let s = t.state().display().to_string();
    out.assert_stderr_count("cannot keep the last valid override", 1);
    out.assert_stderr(&format!(
        "mc-launcher: warning: pillar: cannot keep the last valid override: {s}: Read-only file system (os error 30)"
    ));
    out.assert_stderr(&format!(
        "; the state dir {s} must be writable to keep it (add to docker run: --tmpfs /run, where the state dir falls back to /run/mc-launcher; or mount a volume on {s})\n"
    ));
}
