//! The release (scripts/release.sh, DESIGN §16): every artifact in dist/,
//! checksums and a signature that verify, an SBOM and .debs that name every
//! crate with its version and license, static binaries for the right
//! machine, `--version`, a second build from a clean target dir that gives
//! the same bytes, and the aarch64 binary as PID 1 under qemu-user.
//! (The .deb in the base image and the `COPY --from` image: tests/docker.rs.)

mod common;
use common::release::{deb_arch, release, release_sh, target_dir, version, ARCHES};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `PROGRAM ARGS`: its stdout, or a failed test.
fn run(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().expect(program);
    assert!(
        o.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Debian's qemu-user for `arch` (qemu-user-static, installed by
/// scripts/setup-test-env.sh), called directly: no binfmt needed.
fn qemu(arch: &str) -> &'static str {
    match arch {
        "aarch64" => "/usr/bin/qemu-aarch64-static",
        "armv7" => "/usr/bin/qemu-arm-static",
        other => panic!("no qemu for {other}"),
    }
}

/// A script that runs the aarch64 release binary under qemu-user with the
/// arguments it gets: the `program` of a `Launch`.
fn under_qemu(d: &TempDir) -> PathBuf {
    under_qemu_of(d, "aarch64")
}

/// The same for the release binary of `arch`.
fn under_qemu_of(d: &TempDir, arch: &str) -> PathBuf {
    let p = d.join(&format!("mc-launcher-{arch}"));
    write(
        &p,
        &format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            qemu(arch),
            release().binary(arch).display()
        ),
    );
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    p
}

#[test]
fn dist_holds_every_artifact_with_checksums_and_a_signature_that_verify() {
    let rel = release();
    let mut want: Vec<String> = ARCHES
        .iter()
        .flat_map(|a| [rel.binary(a), rel.deb(a)])
        .chain([rel.sbom()])
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    want.sort();
    let sums = std::fs::read_to_string(rel.dist.join("SHA256SUMS")).expect("SHA256SUMS");
    let mut listed: Vec<String> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).expect("file name").to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, want, "{sums}");
    let mut all: Vec<String> = std::fs::read_dir(&rel.dist)
        .expect("dist")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    all.sort();
    let mut expected = want.clone();
    expected.extend(["SHA256SUMS".into(), "SHA256SUMS.asc".into()]);
    expected.sort();
    assert_eq!(all, expected, "dist/ holds exactly the release");

    // What a user does (README "Install"): check the sums, then the
    // signature over them with the maintainer's public key.
    let o = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&rel.dist)
        .output()
        .expect("sha256sum");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let gpgv = |sums: &Path| {
        Command::new("gpgv")
            .args(["--keyring", path(&rel.signer)])
            .arg(rel.dist.join("SHA256SUMS.asc"))
            .arg(sums)
            .output()
            .expect("gpgv")
    };
    let good = gpgv(&rel.dist.join("SHA256SUMS"));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stderr).contains("Good signature"));
    // A list with one sum changed does not verify.
    let d = TempDir::new("release-sums");
    let forged = d.join("SHA256SUMS");
    let first = sums.chars().next().unwrap();
    let other = if first == '0' { '1' } else { '0' };
    write(&forged, &format!("{other}{}", &sums[1..]));
    let bad = gpgv(&forged);
    assert!(!bad.status.success(), "a forged SHA256SUMS verified");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BAD signature"));
}

#[test]
fn every_binary_is_static_and_for_its_machine() {
    let rel = release();
    for (arch, file_says, machine) in [
        ("x86_64", "x86-64", "Advanced Micro Devices X86-64"),
        ("aarch64", "ARM aarch64", "AArch64"),
        ("armv7", "ARM, EABI5", "ARM"),
    ] {
        let bin = rel.binary(arch);
        let file = run("file", &["-b", path(&bin)]);
        let bits = if arch == "armv7" { "32" } else { "64" };
        assert!(
            file.starts_with(&format!("ELF {bits}-bit LSB executable")),
            "{arch}: {file}"
        );
        assert!(file.contains(file_says), "{arch}: {file}");
        assert!(file.contains("statically linked"), "{arch}: {file}");
        let header = run("readelf", &["-h", path(&bin)]);
        let m = header
            .lines()
            .find(|l| l.trim_start().starts_with("Machine:"))
            .expect("Machine:");
        assert_eq!(m.split(':').nth(1).unwrap().trim(), machine, "{arch}");
        assert!(
            header.contains("EXEC (Executable file)"),
            "{arch}: {header}"
        );
        // No interpreter to ask for, no library to load.
        let segments = run("readelf", &["-l", "-W", path(&bin)]);
        assert!(!segments.contains("INTERP"), "{arch}: {segments}");
        let dynamic = run("readelf", &["-d", path(&bin)]);
        assert!(dynamic.contains("no dynamic section"), "{arch}: {dynamic}");
        // And no path of the build machine inside.
        let bytes = std::fs::read(&bin).expect("read binary");
        for needle in [
            target_dir().to_string_lossy().into_owned(),
            repo().to_string_lossy().into_owned(),
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()) + "/.cargo",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{arch}: {needle} is in the binary"
            );
        }
    }
}

#[test]
fn version_names_commit_target_build_date_and_allocator() {
    let rel = release();
    let commit = run(
        "git",
        &["-C", path(&repo()), "rev-parse", "--short=12", "HEAD"],
    );
    let epoch = run("git", &["-C", path(&repo()), "log", "-1", "--format=%ct"]);
    let date = run("date", &["-u", "-d", &format!("@{}", epoch.trim()), "+%F"]);
    for arch in ARCHES {
        let bin = rel.binary(arch);
        let out = if arch == "x86_64" {
            run(path(&bin), &["--version"])
        } else {
            run(qemu(arch), &[path(&bin), "--version"])
        };
        assert_eq!(
            out,
            format!(
                "mc-launcher {}\ncommit:    {}\ntarget:    {arch}-unknown-linux-musl{}\nbuilt:     {}\nallocator: dlmalloc\n",
                version(),
                commit.trim(),
                if arch == "armv7" { "eabihf" } else { "" },
                date.trim()
            )
        );
    }
}

/// The crates of the musl binary by cargo itself: `name version` lines.
fn crates_by_cargo() -> Vec<String> {
    let tree = run(
        "cargo",
        &[
            "tree",
            "--manifest-path",
            path(&repo().join("Cargo.toml")),
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--target",
            "x86_64-unknown-linux-musl",
            "--prefix",
            "none",
            "-f",
            "{p}",
        ],
    );
    let mut v: Vec<String> = tree
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, ver) = (w.next()?, w.next()?.trim_start_matches('v'));
            (name != "mc-launcher").then(|| format!("{name} {ver}"))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn sbom_and_debs_name_every_crate_with_version_and_license() {
    let rel = release();
    let bom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rel.sbom()).expect("sbom")).expect("json");
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["metadata"]["component"]["name"], "mc-launcher");
    assert_eq!(bom["metadata"]["component"]["version"], version());
    let license = |c: &serde_json::Value| -> String {
        c["licenses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| {
                l["expression"]
                    .as_str()
                    .or(l["license"]["id"].as_str())
                    .or(l["license"]["name"].as_str())
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let mut listed = Vec::new();
    for c in bom["components"].as_array().expect("components") {
        let (name, ver) = (c["name"].as_str().unwrap(), c["version"].as_str().unwrap());
        let lic = license(c);
        assert!(!lic.is_empty(), "{name} {ver} has no license in the SBOM");
        listed.push((format!("{name} {ver}"), lic));
    }
    let mut names: Vec<String> = listed.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        crates_by_cargo(),
        "the SBOM's crates are the binary's"
    );
    assert!(
        names.iter().any(|n| n.starts_with("dlmalloc ")),
        "{names:?}"
    );

    for arch in ARCHES {
        let deb = rel.deb(arch);
        let field = |f: &str| run("dpkg-deb", &["-f", path(&deb), f]).trim().to_string();
        assert_eq!(field("Package"), "mc-launcher");
        assert_eq!(field("Version"), version());
        assert_eq!(field("Architecture"), deb_arch(arch));
        let contents = run("dpkg-deb", &["-c", path(&deb)]);
        let bin_line = contents
            .lines()
            .find(|l| l.ends_with("./usr/bin/mc-launcher"))
            .unwrap_or_else(|| panic!("no /usr/bin/mc-launcher in {contents}"));
        assert!(bin_line.starts_with("-rwxr-xr-x root/root"), "{bin_line}");
        let d = TempDir::new("release-deb");
        run("dpkg-deb", &["-x", path(&deb), path(d.path())]);
        assert_eq!(
            std::fs::read(d.join("usr/bin/mc-launcher")).unwrap(),
            std::fs::read(rel.binary(arch)).unwrap(),
            "{arch}: the .deb holds the release binary"
        );
        // The man page and the completions, as help made them.
        for file in [
            "usr/share/man/man1/mc-launcher.1.gz",
            "usr/share/doc/mc-launcher/README.rst.gz",
            "usr/share/doc/mc-launcher/mc-launcher.schema.json",
            "usr/share/bash-completion/completions/mc-launcher",
            "usr/share/zsh/vendor-completions/_mc-launcher",
            "usr/share/fish/vendor_completions.d/mc-launcher.fish",
        ] {
            let line = contents
                .lines()
                .find(|l| l.ends_with(&format!("./{file}")))
                .unwrap_or_else(|| panic!("{arch}: no /{file} in {contents}"));
            assert!(line.starts_with("-rw-r--r-- root/root"), "{line}");
        }
        let bash =
            std::fs::read_to_string(d.join("usr/share/bash-completion/completions/mc-launcher"))
                .expect("bash completion");
        assert!(
            bash.contains("complete -F _mc_launcher mc-launcher"),
            "{bash}"
        );
        let copyright = std::fs::read_to_string(d.join("usr/share/doc/mc-launcher/copyright"))
            .expect("copyright");
        assert!(copyright.contains("License: BSD-3-Clause"), "{copyright}");
        for (crate_ver, lic) in &listed {
            let para = format!("Files: crates/{}/*\n", crate_ver.replacen(' ', "-", 1));
            let at = copyright
                .find(&para)
                .unwrap_or_else(|| panic!("{arch}: {crate_ver} is not in the copyright file"));
            let rest = &copyright[at..];
            let end = rest.find("\n\n").unwrap_or(rest.len());
            assert!(
                rest[..end].contains(&format!("License: {lic}")),
                "{arch}: {crate_ver}: {}",
                &rest[..end]
            );
        }
    }
}

/// A second release from a fresh target dir at another path (built anew,
/// std and every crate) gives the same binaries and .debs, byte for byte.
#[test]
fn a_build_from_a_clean_target_dir_gives_the_same_bytes() {
    let rel = release();
    let other = TempDir::new("release-repro");
    let target = other.join("elsewhere/target");
    let out = other.join("dist");
    // Two arches are enough to prove it (armv7 takes the same path as
    // aarch64), and keep the suite's time.
    let again = ["x86_64", "aarch64"];
    let dist = release_sh(
        &[
            "--out",
            path(&out),
            "--no-images",
            "--no-sign",
            "--arch",
            again[0],
            "--arch",
            again[1],
        ],
        &[("CARGO_TARGET_DIR", &target)],
    );
    assert_eq!(dist, out);
    assert!(
        target.join("static/mc-launcher").exists(),
        "built in the new target dir"
    );
    for arch in again {
        for (a, b) in [
            (
                rel.binary(arch),
                out.join(rel.binary(arch).file_name().unwrap()),
            ),
            (rel.deb(arch), out.join(rel.deb(arch).file_name().unwrap())),
        ] {
            let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            assert!(x == y, "{} and {} differ", a.display(), b.display());
        }
    }
    // The SBOM too (cargo-cyclonedx honours SOURCE_DATE_EPOCH).
    let sbom = rel.sbom();
    assert_eq!(
        std::fs::read(&sbom).unwrap(),
        std::fs::read(out.join(sbom.file_name().unwrap())).unwrap()
    );
}

// ----- the aarch64 binary as PID 1, under qemu-user --------------------------

/// The launcher's pid (as seen here) of a pid-1 `Launch`: the first child
/// of `unshare --fork`, which is our child (qemu keeps no /proc/PID/exe of
/// the guest to look for).
fn pid1_of(r: &Running) -> i32 {
    let mut pid = None;
    assert!(wait_until(Duration::from_secs(10), || {
        pid = children_of(r.child.id() as i32).first().copied();
        pid.is_some()
    }));
    pid.unwrap()
}

fn send(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill");
}

fn wait_file(p: &Path, what: &str) -> String {
    let mut text = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        text = std::fs::read_to_string(p).unwrap_or_default();
        text.contains(what)
    });
    assert!(ok, "{what:?} never in {}: {text:?}", p.display());
    text
}

#[test]
fn aarch64_passes_every_exit_status_through_under_qemu() {
    let d = TempDir::new("qemu-exit");
    let prog = under_qemu(&d);
    for code in 0..=255 {
        let out = Launch::new(&["-q", "--", "sh", "-c", &format!("exit {code}")])
            .program(&prog)
            .run();
        assert_eq!(out.code, Some(code), "exit {code}: {}", out.all());
    }
    for (sig, n) in [("KILL", 9), ("TERM", 15), ("SEGV", 11)] {
        let out = Launch::new(&["--", "sh", "-c", &format!("kill -{sig} $$")])
            .program(&prog)
            .run();
        assert_eq!(out.code, Some(128 + n), "{sig}: {}", out.all());
    }
}

/// armv7 (32-bit ARM) as PID 1 under qemu-user: exit statuses, a death
/// by signal, and a supervised service stopped cleanly on TERM.
#[test]
fn armv7_passes_exit_statuses_through_and_stops_cleanly_under_qemu() {
    let d = TempDir::new("qemu-armv7");
    let prog = under_qemu_of(&d, "armv7");
    for code in [0, 1, 42, 127, 255] {
        let out = Launch::new(&["-q", "--", "sh", "-c", &format!("exit {code}")])
            .program(&prog)
            .run();
        assert_eq!(out.code, Some(code), "exit {code}: {}", out.all());
    }
    let out = Launch::new(&["--", "sh", "-c", "kill -TERM $$"])
        .program(&prog)
        .run();
    out.assert_code(143);
    let started = d.join("started");
    let cfg = d.join("mc-launcher.yml");
    write(
        &cfg,
        &format!(
            "services:\n  svc:\n    cmd: [\"sh\", \"-c\", \"echo up > {}; exec sleep 1000\"]\n",
            started.display()
        ),
    );
    let r = Launch::new(&["-c", path(&cfg)]).program(&prog).spawn();
    wait_file(&started, "up");
    send(pid1_of(&r), nix::sys::signal::Signal::SIGTERM);
    let out = r.wait();
    out.assert_code(0);
    out.assert_stderr("svc: stopped");
}

#[test]
fn aarch64_forwards_signals_and_reaps_orphans_under_qemu() {
    let d = TempDir::new("qemu-signals");
    let prog = under_qemu(&d);
    let log = d.join("log");
    // The main service hears USR1 through the launcher, then ends with 42 on
    // TERM: the launcher passes both the signal and the status on.
    let script = format!(
        "trap 'echo usr1 >> {l}' USR1; trap 'echo term >> {l}; exit 42' TERM; \
         echo ready >> {l}; while :; do sleep 0.05; done",
        l = log.display()
    );
    let r = Launch::new(&["--", "sh", "-c", &script])
        .program(&prog)
        .spawn();
    wait_file(&log, "ready");
    let pid = pid1_of(&r);
    send(pid, nix::sys::signal::Signal::SIGUSR1);
    wait_file(&log, "usr1");
    send(pid, nix::sys::signal::Signal::SIGTERM);
    let out = r.wait();
    out.assert_code(42);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "ready\nusr1\nterm\n"
    );

    // An orphan (its parent gone at once) is PID 1's child: the launcher
    // reaps it, so it vanishes from /proc instead of staying a zombie.
    let orphan = d.join("orphan");
    let script = format!(
        "sh -c 'sleep 0.2 & echo $! > {o}'; p=$(cat {o}); \
         while [ -e /proc/$p ]; do sleep 0.02; done; echo reaped $p",
        o = orphan.display()
    );
    let out = Launch::new(&["--", "sh", "-c", &script])
        .program(&prog)
        .run();
    out.assert_code(0);
    out.assert_stdout("reaped");
}

#[test]
fn aarch64_supervises_restarts_answers_ctl_and_stops_cleanly_under_qemu() {
    let d = TempDir::new("qemu-services");
    let prog = under_qemu(&d);
    let (runs, bye) = (d.join("runs"), d.join("bye"));
    let cfg = d.join("mc-launcher.yml");
    write(
        &cfg,
        &format!(
            r#"services:
  flappy:
    cmd: ["sh", "-c", "echo run >> {runs}; exit 3"]
    max_retry: -1
    backoff: {{initial: 10ms, max: 50ms}}
  steady:
    cmd: ["sh", "-c", "trap 'echo bye > {bye}; exit 0' TERM; while :; do sleep 0.05; done"]
"#,
            runs = runs.display(),
            bye = bye.display()
        ),
    );
    let r = Launch::new(&["-c", path(&cfg)]).program(&prog).spawn();
    // Restarted after each exit.
    let ok = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
            >= 3
    });
    assert!(ok, "flappy was not restarted");
    let pid = pid1_of(&r);
    // `ctl status` of the aarch64 binary, in the launcher's mount namespace.
    let mut status = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        let o = Command::new("nsenter")
            .args([
                "--mount",
                "--target",
                &pid.to_string(),
                "--",
                qemu("aarch64"),
            ])
            .arg(release().binary("aarch64"))
            .args(["ctl", "status"])
            .env("MC_ROOT", &r.root)
            .env_remove("MC_LAUNCHER_CONFIG")
            .output()
            .expect("nsenter");
        status = String::from_utf8_lossy(&o.stdout).into_owned();
        o.status.success() && status.contains("steady") && status.contains("running")
    });
    assert!(ok, "ctl status: {status}");
    assert!(status.contains("flappy"), "{status}");
    send(pid, nix::sys::signal::Signal::SIGTERM);
    let out = r.wait();
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(&bye).unwrap_or_default(), "bye\n");
}
