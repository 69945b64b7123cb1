//! The Docker CLI as the image tests use it (tests/docker.rs,
//! tests/swarm.rs): run a command and keep what it said, and the example
//! image built from the release artifact under test.

use super::repo;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What one `docker` command did.
pub struct Out {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn of(o: std::process::Output) -> Out {
        Out {
            ok: o.status.success(),
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn docker(args: &[&str]) -> Out {
    docker_env(args, &[])
}

/// `docker ARGS` with these variables added to its environment
/// (`DOCKER_CONFIG`, a stack file's variables).
pub fn docker_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Out::of(cmd.output().expect("docker"))
}

/// `docker ARGS`, which must succeed: its trimmed stdout.
pub fn must(args: &[&str]) -> String {
    must_env(args, &[])
}

pub fn must_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = docker_env(args, env);
    assert!(o.ok, "docker {args:?}: {}{}", o.stdout, o.stderr);
    o.stdout.trim().to_string()
}

/// The release artifact: `MC_STATIC_BIN`, or what scripts/build-static.sh
/// builds (a cargo no-op when it is current).
pub fn static_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MC_STATIC_BIN").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let o = Command::new(repo().join("scripts/build-static.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("build-static.sh");
        assert!(o.status.success(), "scripts/build-static.sh failed");
        PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
    })
}

/// Build the example image as `tag` from the release artifact with
/// scripts/docker-image.sh, whose output must be what an operator should
/// see: the tag, and no legacy-builder banner or debconf noise.
pub fn build_example_image(tag: &str) {
    let o = Command::new(repo().join("scripts/docker-image.sh"))
        .arg(static_bin())
        .arg(tag)
        .output()
        .expect("docker-image.sh");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "building {tag} failed:\n{out}{err}");
    assert_eq!(out.trim(), tag);
    for noise in ["DEPRECATED", "legacy builder", "debconf", "apt-utils"] {
        assert!(
            !err.contains(noise),
            "{noise:?} in the script's output:\n{err}"
        );
    }
}
